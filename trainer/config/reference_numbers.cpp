#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include "trainer/config/reference_numbers_internal.h"

namespace kd::config::detail {

std::optional<Number> parse_number(const std::string& text) {
  Number n;
  const char* begin = text.data();
  const char* end = begin + text.size();
  if (auto [p, ec] = std::from_chars(begin, end, n.i); ec == std::errc() && p == end) return n;
  double d = 0;
  if (auto [p, ec] = std::from_chars(begin, end, d); ec == std::errc() && p == end && std::isfinite(d)) {
    return Number{.integer = false, .i = 0, .d = d};
  }
  return std::nullopt;
}

std::string number_text(const Number& n) {
  if (n.integer) return std::to_string(n.i);
  constexpr double kExact = 9007199254740992.0;  // 2^53
  if (n.d == std::floor(n.d) && std::fabs(n.d) < kExact) return std::to_string(static_cast<int64_t>(n.d));
  char buffer[64];
  const auto [p, ec] = std::to_chars(buffer, buffer + sizeof buffer, n.d);
  return std::string(buffer, p);
}

std::string arithmetic(const std::string& op, const Number& a, const Number& b, Number& out) {
  if ((op == "/" || op == "//" || op == "%") && b.value() == 0) return "a division by zero";
  if (a.integer && b.integer && op != "/") {
    int64_t result = 0;
    bool overflow = false;
    if (op == "+") overflow = __builtin_add_overflow(a.i, b.i, &result);
    if (op == "-") overflow = __builtin_sub_overflow(a.i, b.i, &result);
    if (op == "*") overflow = __builtin_mul_overflow(a.i, b.i, &result);
    if (op == "//" || op == "%") {
      if (a.i == std::numeric_limits<int64_t>::min() && b.i == -1) return "an integer overflow";
      int64_t q = a.i / b.i;
      if ((a.i % b.i != 0) && ((a.i < 0) != (b.i < 0))) --q;
      result = op == "//" ? q : a.i - q * b.i;
    }
    if (overflow) return "an integer overflow";
    out = Number{.integer = true, .i = result, .d = 0};
    return "";
  }
  const double x = a.value(), y = b.value();
  double result = 0;
  if (op == "+") result = x + y;
  if (op == "-") result = x - y;
  if (op == "*") result = x * y;
  if (op == "/") result = x / y;
  if (op == "//") result = std::floor(x / y);
  if (op == "%") result = x - std::floor(x / y) * y;
  if (!std::isfinite(result)) return "the result is not a finite number";
  out = Number{.integer = false, .i = 0, .d = result};
  return "";
}

std::string value_kind(const YAML::Node& node) {
  if (node.IsMap()) return "a map";
  if (node.IsSequence()) return "a list";
  return "empty (null)";
}

namespace {

// The parser of one expression: a recursive descent over its text, one level per precedence.
class Parser {
 public:
  Parser(ExpressionKeys& keys, std::string text) : keys_(keys), text_(std::move(text)) {}

  // The key when the expression is one key and nothing else.
  std::optional<std::string> single_key() {
    pos_ = 0;
    skip_space();
    if (pos_ >= text_.size() || !start_of_key(text_[pos_])) {
      if (trimmed().empty()) throw ExpressionError{"an empty reference \"${}\"; write ${key} or ${key * 2}"};
      return std::nullopt;
    }
    std::string k = read_key();
    skip_space();
    if (pos_ != text_.size()) return std::nullopt;
    return k;
  }

  Number evaluate() {
    pos_ = 0;
    Number n = sum();
    skip_space();
    if (pos_ != text_.size()) bad("unexpected \"" + text_.substr(pos_) + "\"");
    return n;
  }

 private:
  std::string trimmed() const {
    const auto b = text_.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    return text_.substr(b, text_.find_last_not_of(" \t") - b + 1);
  }
  [[noreturn]] void bad(const std::string& why) const {
    throw ExpressionError{"in ${" + text_ + "}: " + why +
                          " (an expression is numbers and keys with + - * / // % and parentheses, e.g. "
                          "${num_train_steps * 0.9})"};
  }
  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }
  static bool start_of_key(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
  static bool key_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-'; }

  std::string read_key() {
    std::string k;
    for (;;) {
      const std::size_t begin = pos_;
      while (pos_ < text_.size() && key_char(text_[pos_])) ++pos_;
      // "a-b" is a key only when it names one: otherwise "-" is a minus.
      std::string part = text_.substr(begin, pos_ - begin);
      if (part.find('-') != std::string::npos && !keys_.exists(k.empty() ? part : k + "." + part)) {
        pos_ = begin + part.find('-');
        part = text_.substr(begin, pos_ - begin);
      }
      k = k.empty() ? part : k + "." + part;
      while (pos_ < text_.size() && text_[pos_] == '[') {
        const auto close = text_.find(']', pos_);
        const std::string digits = close == std::string::npos ? "" : text_.substr(pos_ + 1, close - pos_ - 1);
        if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos) {
          bad("a list index is a number in [ ], e.g. transforms[0]");
        }
        k += "[" + digits + "]";
        pos_ = close + 1;
      }
      if (pos_ + 1 < text_.size() && text_[pos_] == '.' && start_of_key(text_[pos_ + 1])) {
        ++pos_;
        continue;
      }
      return k;
    }
  }

  Number sum() {
    Number left = product();
    for (;;) {
      skip_space();
      if (pos_ >= text_.size() || (text_[pos_] != '+' && text_[pos_] != '-')) return left;
      const char op = text_[pos_++];
      const Number right = product();
      left = apply(op == '+' ? "+" : "-", left, right);
    }
  }

  Number product() {
    Number left = unary();
    for (;;) {
      skip_space();
      if (pos_ >= text_.size()) return left;
      std::string op;
      if (text_.compare(pos_, 2, "//") == 0) {
        op = "//";
      } else if (text_[pos_] == '*' || text_[pos_] == '/' || text_[pos_] == '%') {
        op = std::string(1, text_[pos_]);
      } else {
        return left;
      }
      pos_ += op.size();
      left = apply(op, left, unary());
    }
  }

  Number unary() {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == '-') {
      ++pos_;
      return apply("-", Number{}, unary());
    }
    if (pos_ < text_.size() && text_[pos_] == '+') {
      ++pos_;
      return unary();
    }
    return primary();
  }

  Number primary() {
    skip_space();
    if (pos_ >= text_.size()) bad("a number or a key is missing at the end");
    const char c = text_[pos_];
    if (c == '(') {
      ++pos_;
      Number n = sum();
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != ')') bad("\"(\" without its \")\"");
      ++pos_;
      return n;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') {
      const std::size_t begin = pos_;
      while (pos_ < text_.size() &&
             (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '.' ||
              ((text_[pos_] == '-' || text_[pos_] == '+') && (text_[pos_ - 1] == 'e' || text_[pos_ - 1] == 'E')))) {
        ++pos_;
      }
      const std::string literal = text_.substr(begin, pos_ - begin);
      const auto n = parse_number(literal);
      if (!n) bad("\"" + literal + "\" is not a number");
      return *n;
    }
    if (start_of_key(c)) {
      const std::string k = read_key();
      const YAML::Node target = keys_.value(k);
      if (!target.IsScalar()) bad("\"" + k + "\" is " + value_kind(target) + ", not a number");
      const auto n = parse_number(target.Scalar());
      if (!n) bad("\"" + k + "\" is \"" + target.Scalar() + "\", not a number");
      return *n;
    }
    bad("unexpected \"" + text_.substr(pos_) + "\"");
  }

  Number apply(const std::string& op, const Number& a, const Number& b) const {
    Number out;
    if (const std::string why = arithmetic(op, a, b, out); !why.empty()) bad(why);
    return out;
  }

  ExpressionKeys& keys_;
  std::string text_;
  std::size_t pos_ = 0;
};

}  // namespace

std::optional<std::string> single_key(const std::string& expression, ExpressionKeys& keys) {
  return Parser(keys, expression).single_key();
}

Number evaluate(const std::string& expression, ExpressionKeys& keys) { return Parser(keys, expression).evaluate(); }

}  // namespace kd::config::detail
