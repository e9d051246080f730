#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/reference_numbers_internal.h"
#include "trainer/config/references_internal.h"

namespace kd::config::detail {

std::string where_in(const Origins& origins, const YAML::Node& node, const std::string& fallback) {
  std::string source = fallback;
  for (auto it = origins.rbegin(); it != origins.rend(); ++it) {
    if (it->first.is(node)) {
      source = it->second;
      break;
    }
  }
  const YAML::Mark mark = node.Mark();
  if (mark.is_null() || source.rfind("--cfg", 0) == 0) return source;
  return source + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string join_key(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string join_index(const std::string& parent, std::size_t index) {
  return parent + "[" + std::to_string(index) + "]";
}

namespace {

// One piece of a value's text: literal text, or the expression of a `${...}`.
struct Piece {
  bool expression = false;
  std::string text;
};

// Splits "run-${seed}-${a * 2}" into its pieces; "$${" is a literal "${". ConfigError (through
// `fail`) for a "${" without its "}".
template <typename Fail>
std::vector<Piece> split_pieces(const std::string& text, Fail fail) {
  std::vector<Piece> pieces;
  std::string literal;
  for (std::size_t i = 0; i < text.size();) {
    if (text.compare(i, 3, "$${") == 0) {
      literal += "${";
      i += 3;
    } else if (text.compare(i, 2, "${") == 0) {
      const auto close = text.find('}', i + 2);
      if (close == std::string::npos) fail("\"${\" without its \"}\"");
      if (!literal.empty()) pieces.push_back({false, literal});
      literal.clear();
      pieces.push_back({true, text.substr(i + 2, close - i - 2)});
      i = close + 1;
    } else {
      literal += text[i++];
    }
  }
  if (!literal.empty() || pieces.empty()) pieces.push_back({false, literal});
  return pieces;
}

bool has_reference(const std::string& text) {
  for (std::size_t at = text.find("${"); at != std::string::npos; at = text.find("${", at + 2)) {
    if (at == 0 || text[at - 1] != '$') return true;
  }
  return text.find("$${") != std::string::npos;  // an escape alone is resolved too (to "${")
}

class Resolver {
 public:
  Resolver(YAML::Node root, const Origins& origins, const std::string& fallback)
      : root_(root), origins_(origins), fallback_(fallback) {
    collect(root_, "");
  }

  std::vector<Reference> run() {
    std::vector<Reference> out;
    for (const std::string& key : order_) {
      resolve(key);
      out.push_back({key, pending_.at(key).text});
    }
    return out;
  }

 private:
  enum class State { kTodo, kActive, kDone };
  struct Pending {
    YAML::Node node;
    std::string text;
    State state = State::kTodo;
  };

  void collect(const YAML::Node& node, const std::string& path) {
    if (!path.empty()) keys_.push_back(path);
    if (node.IsMap()) {
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (it->first.IsScalar()) collect(it->second, join_key(path, it->first.Scalar()));
      }
    } else if (node.IsSequence()) {
      for (std::size_t i = 0; i < node.size(); ++i) collect(node[i], join_index(path, i));
    } else if (node.IsScalar() && has_reference(node.Scalar())) {
      pending_.emplace(path, Pending{node, node.Scalar()});
      order_.push_back(path);
    }
  }

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    const Pending& p = pending_.at(key);
    throw ConfigError(where_in(origins_, p.node, fallback_) + ": \"" + key + ": " + p.text + "\": " + why);
  }

  void resolve(const std::string& key) {
    Pending& p = pending_.at(key);
    if (p.state == State::kDone) return;
    if (p.state == State::kActive) {
      std::string chain;
      bool in = false;
      for (const std::string& k : stack_) {
        in = in || k == key;
        if (in) chain += k + " -> ";
      }
      fail(key, "the references form a cycle: " + chain + key + "; give one of these keys a value");
    }
    p.state = State::kActive;
    stack_.push_back(key);
    const std::vector<Piece> pieces = split_pieces(p.text, [&](const std::string& why) { fail(key, why); });
    KeysFrom keys(*this, key);
    try {
      substitute(p.node, key, pieces, keys);
    } catch (const ExpressionError& e) {
      fail(key, e.why);
    }
    stack_.pop_back();
    p.state = State::kDone;
  }

  // Writes the value of `key`, whose text is `pieces`, into `node`.
  void substitute(YAML::Node node, const std::string& key, const std::vector<Piece>& pieces, ExpressionKeys& keys) {
    if (pieces.size() == 1 && pieces.front().expression) {
      const std::string& expression = pieces.front().text;
      // The value referred to, whole: a number, text, a list or a map.
      if (const auto whole = single_key(expression, keys)) {
        const YAML::Node target = lookup(key, *whole);
        if (target.IsScalar()) {
          set_scalar(node, target.Scalar());
        } else {
          node = YAML::Clone(target);
        }
      } else {
        set_scalar(node, number_text(evaluate(expression, keys)));
      }
      return;
    }
    std::string text;
    for (const Piece& piece : pieces) {
      if (!piece.expression) {
        text += piece.text;
        continue;
      }
      if (const auto whole = single_key(piece.text, keys)) {
        const YAML::Node target = lookup(key, *whole);
        if (!target.IsScalar()) {
          fail(key,
               "\"" + *whole + "\" is " + value_kind(target) + "; a reference inside text must name a single value");
        }
        text += target.Scalar();
      } else {
        text += number_text(evaluate(piece.text, keys));
      }
    }
    set_scalar(node, text);
  }

  static void set_scalar(YAML::Node node, const std::string& text) {
    node = text;
    node.SetTag("?");  // plain, as if written so: a number reads as a number
  }

  // The node at `target` (a dotted key), every reference at, above or under it resolved first.
  YAML::Node lookup(const std::string& from, const std::string& target) {
    // A reference above the target (`a: ${b}` and `${a.c}`) or at it.
    for (std::size_t cut = 0; cut <= target.size(); ++cut) {
      if (cut == target.size() || target[cut] == '.' || target[cut] == '[') {
        const std::string prefix = target.substr(0, cut);
        if (pending_.count(prefix)) resolve(prefix);
      }
    }
    YAML::Node node = find(target);
    if (!node.IsDefined()) {
      std::string why = "there is no key \"" + target + "\" in the experiment";
      const auto close = nearest(target, keys_, 1);
      if (!close.empty()) why += ". Did you mean \"" + close.front() + "\"?";
      why += " (a reference names a key written in the experiment's files or overrides, from the top: ${a.b[0].c})";
      fail(from, why);
    }
    if (node.IsMap() || node.IsSequence()) {  // references inside the value taken whole
      for (auto it = pending_.lower_bound(target); it != pending_.end() && it->first.rfind(target, 0) == 0; ++it) {
        const char next = it->first.size() > target.size() ? it->first[target.size()] : '\0';
        if (next == '.' || next == '[') resolve(it->first);
      }
      node.reset(find(target));
    }
    return node;
  }

  // The node at a dotted key, or an undefined node.
  YAML::Node find(const std::string& target) const {
    YAML::Node node;
    node.reset(root_);
    std::size_t at = 0;
    while (at < target.size()) {
      if (target[at] == '[') {
        const auto close = target.find(']', at);
        const std::size_t index = std::stoul(target.substr(at + 1, close - at - 1));
        if (!node.IsSequence() || index >= node.size()) return YAML::Node(YAML::NodeType::Undefined);
        YAML::Node child = node[index];
        node.reset(child);
        at = close + 1;
      } else {
        if (target[at] == '.') ++at;
        const auto end = target.find_first_of(".[", at);
        const std::string key = target.substr(at, end == std::string::npos ? std::string::npos : end - at);
        if (!node.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
        const YAML::Node child = static_cast<const YAML::Node&>(node)[key];
        if (!child.IsDefined()) return YAML::Node(YAML::NodeType::Undefined);
        node.reset(child);
        at = end == std::string::npos ? target.size() : end;
      }
    }
    return node;
  }

  // What an expression in the value of `from` reads: the experiment's keys through `lookup`, so
  // that the references it names are resolved first and a missing key gets the nearest one.
  class KeysFrom : public ExpressionKeys {
   public:
    KeysFrom(Resolver& r, const std::string& from) : r_(r), from_(from) {}
    bool exists(const std::string& key) const override { return r_.find(key).IsDefined(); }
    YAML::Node value(const std::string& key) override { return r_.lookup(from_, key); }

   private:
    Resolver& r_;
    const std::string& from_;
  };

  YAML::Node root_;
  const Origins& origins_;
  std::string fallback_;
  std::map<std::string, Pending> pending_;
  std::vector<std::string> order_;
  std::vector<std::string> keys_;
  std::vector<std::string> stack_;
};

}  // namespace

std::vector<Reference> resolve_references(YAML::Node root, const Origins& origins, const std::string& fallback) {
  return Resolver(root, origins, fallback).run();
}

}  // namespace kd::config::detail
