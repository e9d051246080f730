// Path keys into trees and the Context (Kauldron's kontext paths).
//
//   batch.image               key, key
//   params.encoder.0.weight   "0" is a key of a dict (module names), or an index into a list
//   preds.tokens[0]           index into a list (negative counts from the end)
//   interms["block.1"].attn   a quoted key may hold any character
//   params.*.bias             `*` matches exactly one key or index
//   grads.**                  `**` matches zero or more levels
//
// Paths are values; `Path::parse` throws kd::PathSyntaxError naming the position of the error.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kd {

struct PathSegment {
  enum class Kind { kKey, kIndex, kStar, kDoubleStar };

  Kind kind = Kind::kKey;
  std::string key;    // kKey
  int64_t index = 0;  // kIndex

  static PathSegment make_key(std::string key) { return {Kind::kKey, std::move(key), 0}; }
  static PathSegment make_index(int64_t index) { return {Kind::kIndex, {}, index}; }
  static PathSegment star() { return {Kind::kStar, {}, 0}; }
  static PathSegment double_star() { return {Kind::kDoubleStar, {}, 0}; }

  bool is_glob() const { return kind == Kind::kStar || kind == Kind::kDoubleStar; }
  // The segment as written in a path ("logits", "[3]", "*", "[\"a.b\"]"), without a leading dot.
  std::string str() const;

  friend bool operator==(const PathSegment&, const PathSegment&) = default;
};

class Path {
 public:
  Path() = default;
  explicit Path(std::vector<PathSegment> segments) : segments_(std::move(segments)) {}

  // Parses "a.b[0].*"; throws kd::PathSyntaxError.
  static Path parse(std::string_view text);
  // A path of plain keys, no parsing ("encoder.0.weight" split on dots).
  static Path from_dotted(std::string_view dotted);

  const std::vector<PathSegment>& segments() const { return segments_; }
  std::size_t size() const { return segments_.size(); }
  bool empty() const { return segments_.empty(); }
  const PathSegment& operator[](std::size_t i) const { return segments_[i]; }
  const PathSegment& front() const { return segments_.front(); }

  bool has_glob() const;
  // True when `prefix`'s segments start this path.
  bool starts_with(const Path& prefix) const;

  // New paths.
  Path key(std::string key) const;
  Path index(int64_t index) const;
  Path prefix(std::size_t n) const;  // the first n segments
  Path drop_front(std::size_t n = 1) const;
  Path join(const Path& other) const;

  // Canonical text; Path::parse(p.str()) == p.
  std::string str() const;

  friend bool operator==(const Path&, const Path&) = default;

 private:
  std::vector<PathSegment> segments_;
};

}  // namespace kd
