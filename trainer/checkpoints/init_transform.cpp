#include "trainer/checkpoints/init_transform.h"

#include <limits>
#include <map>
#include <regex>
#include <set>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/safetensors.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/node.h"
#include "trainer/io/file_system.h"

namespace kd::checkpoints {
namespace {

// A path pattern "<prefix>.**" (or an exact path) and what it matches.
struct Prefix {
  std::string prefix;
  bool recursive;
  static Prefix parse(const std::string& text, const config::Node& o) {
    const std::string suffix = ".**";
    if (text.size() > suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return {text.substr(0, text.size() - suffix.size()), true};
    }
    if (text.find('*') != std::string::npos) {
      throw ConfigError(o.where() + ": init_transform patterns are exact paths or \"<prefix>.**\", got \"" + text +
                        "\"");
    }
    return {text, false};
  }
  bool matches(const std::string& path) const { return recursive ? path.rfind(prefix + ".", 0) == 0 : path == prefix; }
};

std::string resolve_checkpoint(const config::Node& o) {
  const std::string path = o.get_string("checkpoint");
  auto fs = io::posix_file_system();
  if (fs->exists(path + "/MANIFEST.json")) return path;
  // A step given must be one (>= 0); without it, the newest valid checkpoint.
  const int64_t step =
      o.has("step") ? o.get_int_in("step", std::nullopt, 0, std::numeric_limits<int64_t>::max()) : int64_t{-1};
  Checkpointer source(path + "/checkpoints", CheckpointerOptions{});
  const auto chosen =
      source.choose(step >= 0 ? std::optional<int64_t>(step) : std::nullopt, [](const CheckpointInfo& info) {
        if (!info.valid()) {
          throw CorruptionError("init_transform: checkpoint " + info.path + " is damaged: " + info.problem);
        }
      });
  if (chosen) return chosen->path;
  throw ConfigError(o.where() + ": init_transform.checkpoint \"" + path + "\" holds no " +
                    (step >= 0 ? "checkpoint of step " + std::to_string(step) : std::string("valid checkpoint")) +
                    " (give a workdir or a ckpt_<step> directory)");
}

}  // namespace

namespace {

// init_transform's keys, read and checked.
struct InitSpec {
  std::string path;  // the checkpoint's directory
  std::vector<Prefix> select;
  std::vector<std::pair<Prefix, Prefix>> renames;  // target <- source
  bool strict = true, opt_state = false, use_ema = false;

  bool selected(const std::string& p) const {
    for (const auto& s : select) {
      if (s.matches(p)) return true;
    }
    return false;
  }
  // The checkpoint's name for the model's tensor `target`.
  std::string source_name(const std::string& target) const {
    for (const auto& [t, s] : renames) {
      if (t.matches(target)) return t.recursive ? s.prefix + target.substr(t.prefix.size()) : s.prefix;
    }
    return target;
  }
};

InitSpec read_spec(const config::Node& o) {
  InitSpec spec;
  spec.path = resolve_checkpoint(o);
  for (const auto& s : o.get_string_list("select", std::vector<std::string>{"params.**"}))
    spec.select.push_back(Prefix::parse(s, o));
  if (auto r = o.find("rename"); r && !r->is_null()) {
    for (const auto& target : r->keys()) {
      const Prefix t = Prefix::parse(target, o), s = Prefix::parse(r->get_string(target), o);
      if (t.recursive != s.recursive)
        throw ConfigError(r->where() + ": rename \"" + target + "\": both sides need \".**\" or neither");
      spec.renames.emplace_back(t, s);
    }
  }
  spec.strict = o.get_bool("strict", true);
  spec.opt_state = o.get_bool("opt_state", false);
  spec.use_ema = o.get_bool("use_ema", false);
  o.check_unknown_keys();
  return spec;
}

// What init_transform copies, and what it found wrong.
struct Matched {
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // model tensor <- checkpoint tensor
  std::vector<std::string> missing, unexpected, mismatched;
  int64_t selected = 0;  // the model's tensors `select` chose
};

// The model's tensors (by full path) matched with the checkpoint's (`source`, by full path).
Matched match_tensors(const InitSpec& spec, const std::map<std::string, torch::Tensor>& source,
                      torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& p : model.named_parameters(true)) targets.emplace_back("params." + p.key(), p.value());
  for (const auto& b : model.named_buffers(true)) targets.emplace_back("collections." + b.key(), b.value());
  Matched m;
  std::set<std::string> used;
  for (const auto& [name, tensor] : targets) {
    if (!spec.selected(name)) continue;
    ++m.selected;
    const std::string from = spec.source_name(name);
    const auto it = source.find(from);
    if (it == source.end()) {
      m.missing.push_back(name + (from == name ? "" : " (from " + from + ")"));
      continue;
    }
    used.insert(from);
    if (it->second.sizes() != tensor.sizes()) {
      m.mismatched.push_back(name + ": model " + describe_tensor(tensor) + ", checkpoint " + from + " " +
                             describe_tensor(it->second));
      continue;
    }
    m.copies.emplace_back(tensor, it->second);
  }
  for (const auto& [name, t] : source) {
    bool wanted = spec.selected(name);
    for (const auto& [tp, sp] : spec.renames)
      wanted = wanted || (sp.matches(name) && spec.selected(tp.prefix + name.substr(sp.prefix.size())));
    if (wanted && !used.count(name)) m.unexpected.push_back(name);
  }
  return m;
}

// What both kinds of init_transform do once the model's tensors are matched: refuse a `select`
// that chooses nothing, list what did not match (`in`: where the tensors come from), throw that
// list when strict (`head`: what did not match, `fix`: what to do), copy the rest. Returns the
// list ("" when everything matched).
std::string copy_matched(const config::Node& o, const Matched& m, bool strict, const std::string& in,
                         const char* mismatch, const std::string& head, const std::string& fix) {
  if (m.selected == 0) {
    throw ConfigError((o.has("select") ? o.child("select").where() : o.where()) +
                      ": init_transform.select chooses none of the model's tensors (they are params.* and "
                      "collections.*; kd inspect lists them)");
  }
  std::string problems;
  const auto list = [&](const std::string& what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    problems += "\n  " + what + " (" + std::to_string(names.size()) + "): " + join_names(names, 10);
  };
  list("missing in " + in, m.missing);
  list("unexpected in " + in, m.unexpected);
  list(mismatch, m.mismatched);
  if (strict && !problems.empty()) {
    throw ConfigError(o.where() + ": " + head + " does not match the model:" + problems + "\n(" + fix + ")");
  }
  torch::NoGradGuard no_grad;
  for (const auto& [to, from] : m.copies) to.copy_(from.to(to.device()));  // converting the dtype where they differ
  return problems;
}

// init_transform: {weights: FILE}: the tensors of a safetensors file, named as PyTorch names a
// module's state (its parameters and buffers, without kd's params./collections.).
std::string apply_weights(const config::Node& o, torch::nn::Module& model,
                          const std::vector<std::pair<std::string, std::string>>& tied) {
  for (const char* key : {"checkpoint", "step", "opt_state", "use_ema"}) {
    if (o.has(key)) {
      throw ConfigError(o.child(key).where() + ": init_transform." + key +
                        " is for a kd checkpoint; with weights (a safetensors file) give rename, select and strict");
    }
  }
  const std::string path = o.get_string("weights");
  std::vector<Prefix> select;
  for (const auto& text : o.get_string_list("select", std::vector<std::string>{"params.**", "collections.**"})) {
    select.push_back(Prefix::parse(text, o));
  }
  // rename: {regex: replacement}, applied in order to each of the file's names (std::regex_replace,
  // ECMAScript syntax: "$1" refers to a group).
  std::vector<std::pair<std::regex, std::string>> renames;
  if (auto r = o.find("rename"); r && !r->is_null()) {
    for (const std::string& pattern : r->keys()) {
      try {
        renames.emplace_back(std::regex(pattern, std::regex::ECMAScript), r->get_string(pattern));
      } catch (const std::regex_error& e) {
        throw ConfigError(r->child(pattern).where() + ": rename \"" + pattern +
                          "\" is not a regular expression (ECMAScript): " + e.what());
      }
    }
  }
  const bool strict = o.get_bool("strict", true);
  o.check_unknown_keys();

  NamedTensors file;
  try {
    file = tensors_from_safetensors(io::posix_file_system()->read_file(path), path);
  } catch (CorruptionError& e) {
    e.add_context(o.child("weights").where() +
                  ": init_transform.weights reads safetensors files only (never a pickle); convert a PyTorch "
                  "state dict with safetensors.torch.save_file(model.state_dict(), \"model.safetensors\")");
    throw;
  }
  // The file's tensors by the model's name for them.
  std::map<std::string, std::pair<std::string, torch::Tensor>> by_name;  // renamed -> (file's name, tensor)
  for (auto& [name, tensor] : file) {
    std::string renamed = name;
    for (const auto& [pattern, replacement] : renames) renamed = std::regex_replace(renamed, pattern, replacement);
    const auto [it, fresh] = by_name.try_emplace(renamed, name, tensor);
    if (!fresh) {
      throw ConfigError(o.child("rename").where() + ": rename gives \"" + it->second.first + "\" and \"" + name +
                        "\" of \"" + path + "\" one name, \"" + renamed + "\"");
    }
  }
  // A tied tensor found under its other name (nanoGPT's lm_head.weight for transformer.wte.weight).
  for (const auto& [other, own] : tied) {
    const auto alias = by_name.find(other);
    if (alias == by_name.end()) continue;
    const auto found = by_name.find(own);
    if (found == by_name.end()) {
      by_name.emplace(own, alias->second);
    } else if (!alias->second.second.sizes().equals(found->second.second.sizes()) ||
               !torch::equal(alias->second.second, found->second.second)) {
      throw ConfigError(o.child("weights").where() + ": \"" + path + "\" holds " + alias->second.first + " and " +
                        found->second.first + ", which the model ties into one tensor (" + own +
                        "), with different values; drop one of them, or untie the model's weights");
    }
    by_name.erase(alias);
  }
  std::vector<std::pair<std::string, torch::Tensor>> targets;  // (bare name, kd's path)
  std::vector<std::string> paths;
  for (const auto& p : model.named_parameters(true))
    targets.emplace_back(p.key(), p.value()), paths.push_back("params." + p.key());
  for (const auto& b : model.named_buffers(true))
    targets.emplace_back(b.key(), b.value()), paths.push_back("collections." + b.key());
  Matched m;
  std::set<std::string> used;
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const auto& [name, tensor] = targets[i];
    if (std::none_of(select.begin(), select.end(), [&](const Prefix& p) { return p.matches(paths[i]); })) continue;
    ++m.selected;
    const auto it = by_name.find(name);
    if (it == by_name.end()) {
      m.missing.push_back(name);
      continue;
    }
    used.insert(name);
    const std::string from = it->second.first == name ? "" : " (" + it->second.first + " in the file)";
    const torch::Tensor& found = it->second.second;
    const bool other_shape = found.sizes() != tensor.sizes();
    if (other_shape || found.is_floating_point() != tensor.is_floating_point()) {
      m.mismatched.push_back(name + from + ": model " + describe_tensor(tensor) + ", file " + describe_tensor(found) +
                             (other_shape ? "" : " (floating point and integer)"));
      continue;
    }
    m.copies.emplace_back(tensor, found);
  }
  // A tensor of the file that went nowhere, unless `select` leaves out where it would go.
  const auto wanted = [&](const std::string& name) {
    return std::any_of(select.begin(), select.end(), [&](const Prefix& s) {
      return s.matches("params." + name) || s.matches("collections." + name);
    });
  };
  for (const auto& [renamed, entry] : by_name) {
    if (!used.count(renamed) && wanted(renamed)) {
      m.unexpected.push_back(entry.first == renamed ? renamed : entry.first + " -> " + renamed);
    }
  }
  const std::string problems = copy_matched(
      o, m, strict, "the file", "shape or type mismatch", "init_transform.weights \"" + path + "\"",
      "the file's names, after rename, must be the model's parameter and buffer names as kd inspect lists them "
      "without params./collections.; fix rename or select, or set strict: false to load what matches");
  std::string report = "loaded " + std::to_string(m.copies.size()) + " tensors from " + path;
  if (!problems.empty()) report += "; not loaded:" + problems;
  return report;
}

}  // namespace

std::string apply_init_transform(const config::Node& o, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                                 const std::vector<std::pair<std::string, std::string>>& tied) {
  if (o.has("weights")) return apply_weights(o, model, tied);
  if (!o.has("checkpoint")) {
    throw ConfigError(o.where() +
                      ": init_transform needs checkpoint (a kd workdir or ckpt_<step> directory) or "
                      "weights (a safetensors file)");
  }
  const InitSpec spec = read_spec(o);
  // The checkpoint's tensors by full path ("params.a.b"); with use_ema the EMA of the params
  // stands for the params.
  std::map<std::string, torch::Tensor> source;
  for (const std::string group : {"params", "collections"}) {
    const std::string read = spec.use_ema && group == "params" ? "ema" : group;
    try {
      for (auto& [name, t] : read_checkpoint_tensors(spec.path, read)) source[group + "." + name] = t;
    } catch (const ConfigError& e) {
      throw ConfigError(o.child("use_ema").where() + ": init_transform.use_ema: " + e.what());
    }
  }
  const Matched m = match_tensors(spec, source, model);
  const std::string problems =
      copy_matched(o, m, spec.strict, "the checkpoint", "shape mismatch", "init_transform from " + spec.path,
                   "fix select/rename, or set strict: false to load what matches");
  if (spec.opt_state) {
    if (optimizer == nullptr) throw ConfigError(o.where() + ": opt_state: true needs an optimizer");
    if (!spec.renames.empty()) throw ConfigError(o.where() + ": opt_state: true cannot be combined with rename");
    read_checkpoint_optimizer_state(spec.path, *optimizer, model);
  }
  std::string report = "loaded " + std::to_string(m.copies.size()) + " tensors from " + spec.path;
  if (spec.opt_state) report += " and the optimizer state";
  if (!problems.empty()) report += "; not loaded:" + problems;
  return report;
}

}  // namespace kd::checkpoints
