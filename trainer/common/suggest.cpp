#include "trainer/common/suggest.h"

#include <algorithm>
#include <cctype>
#include <numeric>

namespace kd {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  auto lower = [](char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); };
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  std::iota(prev.begin(), prev.end(), 0);
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t substitution = prev[j - 1] + (lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, substitution});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> nearest(std::string_view word, const std::vector<std::string>& candidates,
                                 std::size_t max_results) {
  // Close enough: at most a third of the longer word's letters differ (and at least 2 may),
  // or one is a prefix of the other ("logit" vs "logits", "acc" vs "accuracy").
  std::vector<std::pair<std::size_t, std::size_t>> scored;  // (distance, index)
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::string& c = candidates[i];
    const std::size_t d = edit_distance(word, c);
    const std::size_t limit = std::max<std::size_t>(2, std::max(word.size(), c.size()) / 3);
    const bool prefix =
        !word.empty() && (c.rfind(word, 0) == 0 || word.rfind(c, 0) == 0) && std::min(word.size(), c.size()) >= 3;
    if (d <= limit || prefix) scored.emplace_back(d, i);
  }
  std::stable_sort(scored.begin(), scored.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (const auto& [d, i] : scored) {
    if (out.size() == max_results) break;
    out.push_back(candidates[i]);
  }
  return out;
}

std::string join_names(const std::vector<std::string>& names, std::size_t max_items) {
  std::string out;
  for (std::size_t i = 0; i < names.size() && i < max_items; ++i) {
    if (i) out += ", ";
    out += names[i];
  }
  if (names.size() > max_items) out += ", ... (" + std::to_string(names.size() - max_items) + " more)";
  return out;
}

}  // namespace kd
