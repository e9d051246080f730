#include "trainer/checkpoints/init_transform.h"

#include <map>
#include <set>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/config/node.h"

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
  const int64_t step = o.get_int("step", -1);
  Checkpointer source(path + "/checkpoints", CheckpointerOptions{});
  const auto chosen = Checkpointer::choose(
      source.probe(), step >= 0 ? std::optional<int64_t>(step) : std::nullopt, [](const CheckpointInfo& info) {
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

std::string apply_init_transform(const config::Node& o, torch::nn::Module& model, torch::optim::Optimizer* optimizer) {
  const std::string path = resolve_checkpoint(o);
  std::vector<Prefix> select;
  for (const auto& s : o.get_string_list("select", std::vector<std::string>{"params.**"}))
    select.push_back(Prefix::parse(s, o));
  std::vector<std::pair<Prefix, Prefix>> renames;  // target <- source
  if (auto r = o.find("rename"); r && !r->is_null()) {
    for (const auto& target : r->keys()) {
      const Prefix t = Prefix::parse(target, o), s = Prefix::parse(r->get_string(target), o);
      if (t.recursive != s.recursive)
        throw ConfigError(r->where() + ": rename \"" + target + "\": both sides need \".**\" or neither");
      renames.emplace_back(t, s);
    }
  }
  const bool strict = o.get_bool("strict", true);
  const bool opt_state = o.get_bool("opt_state", false);
  const bool use_ema = o.get_bool("use_ema", false);
  o.check_unknown_keys();

  // The checkpoint's tensors by full path ("params.a.b"); with use_ema the EMA of the params
  // stands for the params.
  std::map<std::string, torch::Tensor> source;
  for (const std::string group : {"params", "collections"}) {
    const std::string read = use_ema && group == "params" ? "ema" : group;
    try {
      for (auto& [name, t] : read_checkpoint_tensors(path, read)) source[group + "." + name] = t;
    } catch (const ConfigError& e) {
      throw ConfigError(o.child("use_ema").where() + ": init_transform.use_ema: " + e.what());
    }
  }
  // The model's tensors by full path.
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& p : model.named_parameters(true)) targets.emplace_back("params." + p.key(), p.value());
  for (const auto& b : model.named_buffers(true)) targets.emplace_back("collections." + b.key(), b.value());

  auto selected = [&](const std::string& p) {
    for (const auto& s : select) {
      if (s.matches(p)) return true;
    }
    return false;
  };
  auto source_name = [&](const std::string& target) {
    for (const auto& [t, s] : renames) {
      if (t.matches(target)) return t.recursive ? s.prefix + target.substr(t.prefix.size()) : s.prefix;
    }
    return target;
  };

  std::vector<std::string> missing, mismatched;
  std::set<std::string> used;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (const auto& [name, tensor] : targets) {
    if (!selected(name)) continue;
    const std::string from = source_name(name);
    const auto it = source.find(from);
    if (it == source.end()) {
      missing.push_back(name + (from == name ? "" : " (from " + from + ")"));
      continue;
    }
    used.insert(from);
    if (it->second.sizes() != tensor.sizes()) {
      mismatched.push_back(name + ": model " + describe_tensor(tensor) + ", checkpoint " + from + " " +
                           describe_tensor(it->second));
      continue;
    }
    copies.emplace_back(tensor, it->second);
  }
  std::vector<std::string> unexpected;
  std::vector<std::string> renamed_sources;
  for (const auto& [t, s] : renames) renamed_sources.push_back(s.prefix);
  for (const auto& [name, t] : source) {
    bool wanted = selected(name);
    for (const auto& [tp, sp] : renames)
      wanted = wanted || (sp.matches(name) && selected(tp.prefix + name.substr(sp.prefix.size())));
    if (wanted && !used.count(name)) unexpected.push_back(name);
  }

  std::string problems;
  auto list = [&](const char* what, const std::vector<std::string>& names) {
    if (names.empty()) return;
    problems += std::string("\n  ") + what + " (" + std::to_string(names.size()) + "): " + join_names(names, 10);
  };
  list("missing in the checkpoint", missing);
  list("unexpected in the checkpoint", unexpected);
  list("shape mismatch", mismatched);
  if (strict && !problems.empty()) {
    throw ConfigError(o.where() + ": init_transform from " + path + " does not match the model:" + problems +
                      "\n(fix select/rename, or set strict: false to load what matches)");
  }
  {
    torch::NoGradGuard no_grad;
    for (auto& [to, from] : copies) to.copy_(from.to(to.device()));
  }
  if (opt_state) {
    if (optimizer == nullptr) throw ConfigError(o.where() + ": opt_state: true needs an optimizer");
    if (!renames.empty()) throw ConfigError(o.where() + ": opt_state: true cannot be combined with rename");
    read_checkpoint_optimizer_state(path, *optimizer, model);
  }
  std::string report = "loaded " + std::to_string(copies.size()) + " tensors from " + path;
  if (opt_state) report += " and the optimizer state";
  if (!problems.empty()) report += "; not loaded:" + problems;
  return report;
}

}  // namespace kd::checkpoints
