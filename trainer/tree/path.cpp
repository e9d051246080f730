#include "trainer/tree/path.h"

#include <cctype>
#include <charconv>

#include "trainer/common/error.h"

namespace kd {
namespace {

// Characters that end a bare key. Everything else (letters, digits, '_', '-', '/', ':', ...)
// may appear in a key written without quotes.
bool ends_bare_key(char c) {
  return c == '.' || c == '[' || c == ']' || c == '"' || c == '\'' || std::isspace(static_cast<unsigned char>(c));
}

bool needs_quotes(const std::string& key) {
  if (key.empty() || key == "*" || key == "**") return true;
  for (char c : key) {
    if (ends_bare_key(c) || c == '*' || c == '\\') return true;
  }
  return false;
}

std::string quote(const std::string& key) {
  std::string out = "[\"";
  for (char c : key) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"]";
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Path parse() {
    std::vector<PathSegment> segments;
    if (text_.empty()) fail(0, "the path is empty");
    bool expect_key = true;  // at the start or after '.'
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '[') {
        if (expect_key && pos_ != 0) fail(pos_, "expected a key after '.'");
        segments.push_back(bracket());
        expect_key = false;
      } else if (c == '.') {
        if (expect_key) fail(pos_, "empty key (two dots, or a leading dot)");
        ++pos_;
        expect_key = true;
      } else {
        if (!expect_key) fail(pos_, "expected '.' or '[' between keys");
        segments.push_back(bare());
        expect_key = false;
      }
    }
    if (expect_key) fail(pos_, "the path ends with '.'");
    return Path(std::move(segments));
  }

 private:
  [[noreturn]] void fail(std::size_t at, const std::string& why) const {
    throw PathSyntaxError("invalid path \"" + std::string(text_) + "\": " + why + " at position " + std::to_string(at) +
                          "\n  " + std::string(text_) + "\n  " + std::string(at, ' ') + "^");
  }

  PathSegment bare() {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && !ends_bare_key(text_[pos_])) ++pos_;
    const std::string key(text_.substr(start, pos_ - start));
    if (key.empty()) fail(start, "unexpected character '" + std::string(1, text_[start]) + "'");
    if (key == "*") return PathSegment::star();
    if (key == "**") return PathSegment::double_star();
    if (key.find('*') != std::string::npos) {
      fail(start, "'*' and '**' must be a whole key (partial globs like \"" + key + "\" are not supported)");
    }
    return PathSegment::make_key(key);
  }

  PathSegment bracket() {
    const std::size_t open = pos_++;
    if (pos_ >= text_.size()) fail(open, "unclosed '['");
    PathSegment segment;
    const char c = text_[pos_];
    if (c == '"' || c == '\'') {
      segment = PathSegment::make_key(quoted(c));
    } else if (c == '*') {
      const std::size_t start = pos_;
      while (pos_ < text_.size() && text_[pos_] == '*') ++pos_;
      const std::size_t stars = pos_ - start;
      if (stars > 2) fail(start, "only '*' and '**' are globs");
      segment = stars == 1 ? PathSegment::star() : PathSegment::double_star();
    } else {
      const std::size_t start = pos_;
      while (pos_ < text_.size() && text_[pos_] != ']') ++pos_;
      const std::string_view digits = text_.substr(start, pos_ - start);
      int64_t index = 0;
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), index);
      if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
        fail(start, "an index must be an integer, or a quoted key like [\"" + std::string(digits) + "\"]");
      }
      segment = PathSegment::make_index(index);
    }
    if (pos_ >= text_.size() || text_[pos_] != ']') fail(pos_, "expected ']'");
    ++pos_;
    return segment;
  }

  std::string quoted(char quote_char) {
    const std::size_t open = pos_++;
    std::string key;
    while (pos_ < text_.size() && text_[pos_] != quote_char) {
      if (text_[pos_] == '\\' && pos_ + 1 < text_.size()) ++pos_;
      key += text_[pos_++];
    }
    if (pos_ >= text_.size()) fail(open, "unclosed quote");
    ++pos_;
    return key;
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace

std::string PathSegment::str() const {
  switch (kind) {
    case Kind::kKey:
      return needs_quotes(key) ? quote(key) : key;
    case Kind::kIndex: {
      std::string out = "[";  // appended, not concatenated: GCC 12 misreads the latter as an overflow
      out.append(std::to_string(index)).push_back(']');
      return out;
    }
    case Kind::kStar:
      return "*";
    case Kind::kDoubleStar:
      return "**";
  }
  return {};
}

Path Path::parse(std::string_view text) { return Parser(text).parse(); }

Path Path::from_dotted(std::string_view dotted) {
  std::vector<PathSegment> segments;
  std::size_t start = 0;
  while (start <= dotted.size()) {
    std::size_t dot = dotted.find('.', start);
    if (dot == std::string_view::npos) dot = dotted.size();
    segments.push_back(PathSegment::make_key(std::string(dotted.substr(start, dot - start))));
    start = dot + 1;
  }
  return Path(std::move(segments));
}

bool Path::has_glob() const {
  for (const auto& s : segments_) {
    if (s.is_glob()) return true;
  }
  return false;
}

bool Path::starts_with(const Path& prefix) const {
  if (prefix.size() > size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (!(segments_[i] == prefix.segments_[i])) return false;
  }
  return true;
}

Path Path::key(std::string key) const {
  Path out = *this;
  out.segments_.push_back(PathSegment::make_key(std::move(key)));
  return out;
}

Path Path::index(int64_t index) const {
  Path out = *this;
  out.segments_.push_back(PathSegment::make_index(index));
  return out;
}

Path Path::prefix(std::size_t n) const {
  return Path({segments_.begin(), segments_.begin() + std::min(n, segments_.size())});
}

Path Path::drop_front(std::size_t n) const {
  return Path({segments_.begin() + std::min(n, segments_.size()), segments_.end()});
}

Path Path::join(const Path& other) const {
  Path out = *this;
  out.segments_.insert(out.segments_.end(), other.segments_.begin(), other.segments_.end());
  return out;
}

std::string Path::str() const {
  std::string out;
  for (std::size_t i = 0; i < segments_.size(); ++i) {
    const std::string s = segments_[i].str();
    if (i > 0 && s[0] != '[') out += '.';
    out += s;
  }
  return out;
}

}  // namespace kd
