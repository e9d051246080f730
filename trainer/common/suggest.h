// "Did you mean ...?" support shared by every error that names a user's misspelling:
// path keys, YAML keys, registered component names.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace kd {

// Levenshtein distance, case-insensitive (so "Logits" is close to "logits").
std::size_t edit_distance(std::string_view a, std::string_view b);

// The candidates close enough to `word` to be a likely misspelling, closest first
// (ties keep the candidates' order). At most `max_results`.
std::vector<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates,
                                 std::size_t max_results = 3);

// "a, b, c" (at most `max_items`, then ", ... (N more)").
std::string join_names(const std::vector<std::string>& names, std::size_t max_items = 20);

}  // namespace kd
