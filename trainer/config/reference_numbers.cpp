#include <charconv>
#include <cmath>
#include <limits>

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

}  // namespace kd::config::detail
