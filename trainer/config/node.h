// kd::config::Node: a YAML value that remembers where it was written (file:line:column and its
// dotted key path) and which keys its reader asked for, so that every error names the place
// to fix and a misspelt key is reported with the nearest valid one.
//
//   auto cfg = kd::config::Node::load_file("configs/fashion_mnist_mlp.yaml");
//   double lr = cfg.child("optimizer").get_double("learning_rate", 1e-3);
//   cfg.check_unknown_keys();  // ConfigError: configs/x.yaml:7:3: unknown key "learnig_rate" in
//                              // "optimizer". Did you mean "learning_rate"? ...
//
// A component reads its own options from the Node it is given (reading an optional key with a
// default still marks it as known). Nodes are cheap handles sharing the document.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kd::config {

class Node {
 public:
  // An empty map (every optional key takes its default).
  Node();

  // Throws kd::IOError when the file cannot be read, kd::ConfigError on bad YAML.
  static Node load_file(const std::string& path);
  static Node parse(const std::string& text, const std::string& source_name = "<string>");

  bool is_map() const;
  bool is_sequence() const;
  bool is_scalar() const;
  bool is_null() const;

  // Map access. `has` and every getter mark the key as known to this node's reader.
  bool has(std::string_view key) const;
  Node child(std::string_view key) const;  // throws ConfigError when missing
  std::optional<Node> find(std::string_view key) const;
  // The section at `key` for a component's options: the child, or an empty map (every option
  // its default) when the key is absent or null.
  Node section(std::string_view key) const;
  std::vector<std::string> keys() const;  // in file order

  // Sequence access.
  std::size_t size() const;
  std::vector<Node> elements() const;

  // Typed getters of a map key; without a default the key is required. Each throws
  // kd::ConfigError naming file:line, the key and the expected type.
  double get_double(std::string_view key, std::optional<double> def = std::nullopt) const;
  int64_t get_int(std::string_view key, std::optional<int64_t> def = std::nullopt) const;
  bool get_bool(std::string_view key, std::optional<bool> def = std::nullopt) const;
  std::string get_string(std::string_view key, std::optional<std::string> def = std::nullopt) const;
  // The same, within [min, max] (a NaN is outside every range): otherwise a ConfigError naming
  // the key, its value and the range.
  int64_t get_int_in(std::string_view key, std::optional<int64_t> def, int64_t min, int64_t max) const;
  double get_double_in(std::string_view key, std::optional<double> def, double min, double max) const;
  std::vector<int64_t> get_int_list_in(std::string_view key, std::optional<std::vector<int64_t>> def, int64_t min,
                                       int64_t max) const;
  std::vector<int64_t> get_int_list(std::string_view key, std::optional<std::vector<int64_t>> def = std::nullopt) const;
  std::vector<double> get_double_list(std::string_view key,
                                      std::optional<std::vector<double>> def = std::nullopt) const;
  std::vector<std::string> get_string_list(std::string_view key,
                                           std::optional<std::vector<std::string>> def = std::nullopt) const;

  // The value of this (scalar) node.
  double as_double() const;
  int64_t as_int() const;
  bool as_bool() const;
  std::string as_string() const;

  // "file.yaml:12:5" (1-based), or the source name when the node was not read from text.
  std::string where() const;
  // The dotted key path from the document root ("optimizer.learning_rate"; "" at the root).
  const std::string& key_path() const;

  // Throws ConfigError for the first key of this map that no reader asked for, with the
  // nearest known key. Not recursive: each component checks the map it reads.
  void check_unknown_keys() const;

  // The values under this node for printing (kd config), in document order: each scalar, list of
  // scalars, empty map or list with its dotted key ("a.b[0].c"), its YAML flow text and where it
  // was written ("file.yaml:12", or the override's "--cfg.KEY"). `skip`: top-level keys left out.
  struct Leaf {
    std::string key, text, where;
  };
  std::vector<Leaf> leaves(const std::vector<std::string>& skip = {}) const;

  // The defaults that readers of this node's document took for keys it does not give, so far:
  // (dotted key, YAML text), sorted by key.
  std::vector<std::pair<std::string, std::string>> defaults_taken() const;

  // YAML text of this node.
  std::string to_yaml() const;
  // Every scalar under this node as (dotted key, text), sequences written as YAML flow text;
  // for comparing two experiments.
  std::vector<std::pair<std::string, std::string>> flatten() const;

  struct Impl;
  explicit Node(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  const std::shared_ptr<Impl>& impl() const { return impl_; }

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace kd::config
