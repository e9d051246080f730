// The expression inside a `${...}` and the numbers of its arithmetic (config/references.cpp
// resolves the references). Internal to config/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <yaml-cpp/yaml.h>

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

// "a map", "a list", "empty (null)": what a value that is not a scalar is, for messages.
std::string value_kind(const YAML::Node& node);

// What an expression reads of the experiment.
class ExpressionKeys {
 public:
  virtual ~ExpressionKeys() = default;
  // Whether a dotted key ("a.b[0].c") is written in the experiment.
  virtual bool exists(const std::string& key) const = 0;
  // The value at a dotted key, its own references resolved; a ConfigError where there is none.
  virtual YAML::Node value(const std::string& key) = 0;
};

// Why an expression does not parse or compute (the caller names the file:line and key).
struct ExpressionError {
  std::string why;
};

// An expression inside ${...}: numbers, keys (a.b[0].c), + - * / // %, unary -, parentheses.
// The key when the expression is one key and nothing else; nullopt otherwise.
std::optional<std::string> single_key(const std::string& expression, ExpressionKeys& keys);
// Its value. Both throw ExpressionError (an empty reference, a syntax error, arithmetic on what
// is not a number, a division by zero, an overflow).
Number evaluate(const std::string& expression, ExpressionKeys& keys);

}  // namespace kd::config::detail
