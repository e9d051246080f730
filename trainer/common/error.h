// kd's error kinds. Every failure a user can cause (a bad path, a bad YAML key, a damaged
// checkpoint) is raised as one of these, where the bad input is first seen, and is caught
// once by the command line, which prints `what()` and exits non-zero.
//
//   try { ctx.get("preds.logit"); }
//   catch (const kd::KeyError& e) { std::cerr << e.what(); }   // names the nearest key
//
// As an error travels up, callers add where it happened with `add_context`:
//   catch (kd::Error& e) { e.add_context("while computing metric 'accuracy'"); throw; }
#pragma once

#include <exception>
#include <string>

namespace kd {

class Error : public std::exception {
 public:
  explicit Error(std::string message) : message_(std::move(message)) {}

  const char* what() const noexcept override { return message_.c_str(); }

  // The message without any context added on the way up.
  const std::string& message() const noexcept { return message_; }

  // Prepends "<context>: " to the message.
  void add_context(const std::string& context);

 private:
  std::string message_;
};

// A user-written input (YAML, command line, a path key in a config) is invalid.
class ConfigError : public Error {
  using Error::Error;
};

// A path key does not exist in a tree or the Context; see tree/key_error.h.
class KeyError : public Error {
  using Error::Error;
};

// A path key is not well-formed (e.g. "preds..logits", "x[a").
class PathSyntaxError : public ConfigError {
  using ConfigError::ConfigError;
};

// Intact stored data that does not fit the experiment: a checkpoint of another model (other
// tensor names or shapes). Not damage: nothing older is tried in its place.
class MismatchError : public ConfigError {
  using ConfigError::ConfigError;
};

// Stored data (a checkpoint, a dataset file) is damaged or not what it claims to be.
class CorruptionError : public Error {
  using Error::Error;
};

// The operating system refused a read or write.
class IOError : public Error {
  using Error::Error;
};

// A valid request for something kd does not do (yet), e.g. an optimizer it cannot inspect.
class NotSupportedError : public Error {
  using Error::Error;
};

// Training produced a NaN or infinite loss (see nan_policy).
class NonFiniteError : public Error {
  using Error::Error;
};

// A value has the wrong kind (e.g. a tensor was expected but the tree holds a dict).
class TypeError : public Error {
  using Error::Error;
};

// Another process of a distributed job failed, hung, or could not be reached.
class DistributedError : public Error {
  using Error::Error;
};

}  // namespace kd
