// kd::config::Registry<Base>: one per extension point (models, losses, metrics, summaries,
// schedules, ...). A component is built from the YAML map that names it, by its constructor
// taking that map (`MyLoss(const kd::config::Node& options)`); built-ins are added by explicit
// calls when the registry is first used, and users add their own components the same way:
//
//   kd::losses::registry().add<MyLoss>("MyLoss", "preds, targets, weight=1");
//   kd::losses::registry().add("Scaled", [](const kd::config::Node& o) { ... });  // any factory
//   // YAML:  train_losses: {mine: {type: MyLoss, weight: 0.5}}
//
// An extension point's registry() is built once, on first use:
//
//   config::Registry<Loss>& registry() {
//     return config::Registry<Loss>::built_once("loss", [](auto& r) { add_regression_losses(r); });
//   }
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/node.h"

namespace kd::config {

template <typename Base>
class Registry {
 public:
  using Factory = std::function<std::shared_ptr<Base>(const Node& options)>;

  // `kind` names the extension point in messages ("loss", "metric").
  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // Throws kd::Error when `name` is already registered.
  void add(const std::string& name, Factory factory, std::string doc = "") {
    if (entries_.count(name)) throw Error("a " + kind_ + " named \"" + name + "\" is already registered");
    entries_.emplace(name, Entry{std::move(factory), std::move(doc)});
    order_.push_back(name);
  }

  // Registers T, built by its constructor from the component's options: T(const Node&).
  template <typename T>
  void add(const std::string& name, std::string doc = "") {
    add(
        name, [](const Node& options) { return std::make_shared<T>(options); }, std::move(doc));
  }

  // The registry made by `fill` on the first call from this call site, and the same one after:
  // built by explicit calls, so no static initialisation order is involved and a static library
  // cannot drop a registration; never destroyed, so it outlives every static that uses it.
  template <typename Fill>
  static Registry& built_once(const char* kind, Fill fill) {
    static Registry* registry = [&] {
      auto* r = new Registry(kind);
      fill(*r);
      return r;
    }();
    return *registry;
  }

  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  const std::vector<std::string>& names() const { return order_; }
  const std::string& doc(const std::string& name) const { return entries_.at(name).doc; }
  const std::string& kind() const { return kind_; }

  // Builds the component named by `options`' "type" key, then rejects any key it did not read.
  std::shared_ptr<Base> create(const Node& options) const { return create(options.get_string("type"), options); }

  std::shared_ptr<Base> create(const std::string& type, const Node& options) const {
    const auto it = entries_.find(type);
    if (it == entries_.end()) {
      std::string message = options.where() + ": unknown " + kind_ + " type \"" + type + "\"";
      const auto close = nearest(type, order_, 3);
      if (!close.empty()) message += ". Did you mean " + join_names(close) + "?";
      message += " (registered: " + join_names(order_, 40) + ")";
      throw ConfigError(message);
    }
    std::shared_ptr<Base> built;
    try {
      built = it->second.factory(options);
    } catch (Error& e) {
      if (!options.key_path().empty()) e.add_context("in " + kind_ + " \"" + options.key_path() + "\"");
      throw;
    } catch (const std::exception& e) {
      // LibTorch refusing a value the YAML chose: the component and where, not a backtrace.
      const std::string what = e.what();
      throw ConfigError(options.where() + ": building the " + kind_ + " \"" + type + "\"" +
                        (options.key_path().empty() ? "" : " of \"" + options.key_path() + "\"") +
                        " failed: " + what.substr(0, what.find('\n')));
    }
    options.check_unknown_keys();
    return built;
  }

 private:
  struct Entry {
    Factory factory;
    std::string doc;
  };
  std::string kind_;
  std::map<std::string, Entry> entries_;
  std::vector<std::string> order_;
};

}  // namespace kd::config
