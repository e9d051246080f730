// The numbers of a reference's arithmetic (config/references.cpp). Internal to config/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kd::config::detail {

// A number of an expression: an integer while every operand and operation keeps it one.
struct Number {
  bool integer = true;
  int64_t i = 0;
  double d = 0;
  double value() const { return integer ? static_cast<double>(i) : d; }
};

// An integer or a finite double written in full ("12", "2e-3"); nullopt for anything else.
std::optional<Number> parse_number(const std::string& text);

// A whole number is written as an integer (so `${steps * 0.9}` can be a step count); other
// numbers in the shortest text that reads back the same double.
std::string number_text(const Number& n);

// `a op b` for op in + - * / // % into `out` (Python's // and %: rounded down, the remainder of
// b's sign; integers stay integers but for /). "" on success, else why not: a division by zero,
// an integer overflow, a result that is not finite.
std::string arithmetic(const std::string& op, const Number& a, const Number& b, Number& out);

}  // namespace kd::config::detail
