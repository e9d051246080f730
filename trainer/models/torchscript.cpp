// TorchScript: trains a module saved with torch.jit.save (Python) or torch::jit::Module::save.
//   model: {type: TorchScript, path: model.pt, inputs: {x: batch.image, mask: batch.mask}, output_key: logits}
// `inputs` maps the arguments of the module's forward, by their names, to paths of the Context;
// an argument with a default value may be left out. Without `inputs`, a forward of one argument
// reads batch.image (as does `inputs: {x: ...}` for any one-argument forward, whatever its name).
// The module starts from the weights saved in the file (seed and the model's own initialisation do
// not apply). Its parameters and buffers are registered on this module under the same dotted
// names (sharing storage), so params/collections, optimizers and checkpoints see them as for any
// other model. A tensor output becomes preds.<output_key>; a dict output (str -> tensor) becomes
// preds itself; a tuple or list becomes a list.
#include <algorithm>
#include <filesystem>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <torch/script.h>

#include "trainer/common/error.h"
#include "trainer/models/builtins_internal.h"

namespace kd::models {
namespace {

Tree to_tree(const c10::IValue& v, const std::string& output_key) {
  if (v.isTensor()) return output_key.empty() ? Tree(v.toTensor()) : Tree::dict({{output_key, v.toTensor()}});
  if (v.isGenericDict()) {
    Tree out = Tree::dict();
    for (const auto& item : v.toGenericDict()) out.insert(item.key().toStringRef(), to_tree(item.value(), ""));
    return out;
  }
  if (v.isTuple() || v.isList()) {
    Tree out = Tree::list();
    const auto elements = v.isTuple() ? v.toTupleRef().elements().vec() : v.toListRef().vec();
    for (const auto& e : elements) out.push_back(to_tree(e, ""));
    return out;
  }
  if (v.isInt()) return Tree(v.toInt());
  if (v.isDouble()) return Tree(v.toDouble());
  if (v.isString()) return Tree(v.toStringRef());
  throw NotSupportedError("a TorchScript model returned " + v.tagKind() + "; return tensors, dicts, tuples or lists");
}

// The submodule of `root` at dotted `path`, created empty when missing.
torch::nn::Module& module_at(torch::nn::Module& root, const std::vector<std::string>& path) {
  torch::nn::Module* m = &root;
  for (const auto& name : path) {
    auto children = m->named_children();
    if (auto* found = children.find(name)) {
      m = found->get();
    } else {
      m = m->register_module(name, std::make_shared<torch::nn::Module>(name)).get();
    }
  }
  return *m;
}

// The module at `path`, or an error naming the key.
torch::jit::Module load_script(const config::Node& o) {
  const std::string path = o.get_string("path");
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) {
    throw IOError(o.child("path").where() + ": the TorchScript file \"" + path + "\" " +
                  (std::filesystem::exists(path, error) ? "is not a regular file" : "does not exist") +
                  " (a relative path is from the directory kd runs in, " +
                  std::filesystem::current_path(error).string() + "); save one with torch.jit.save");
  }
  try {
    return torch::jit::load(path);
  } catch (const c10::Error& e) {
    throw IOError(o.where() + ": cannot load the TorchScript file \"" + path +
                  "\": " + e.msg().substr(0, e.msg().find('\n')));
  }
}

struct ForwardArgument {
  std::string name;
  bool has_default;
};

// The arguments of the module's forward, without self.
std::vector<ForwardArgument> forward_arguments(const torch::jit::Module& module, const config::Node& o) {
  const auto method = module.find_method("forward");
  if (!method) throw ConfigError(o.child("path").where() + ": the TorchScript module has no forward method");
  std::vector<ForwardArgument> out;
  const auto& arguments = method->function().getSchema().arguments();
  for (std::size_t i = 1; i < arguments.size(); ++i) {
    out.push_back({arguments[i].name(), arguments[i].default_value().has_value()});
  }
  return out;
}

// The model's inputs: those `inputs` names (each an argument of forward; every argument without
// a default given), or batch.image for a forward of one argument.
std::vector<std::pair<std::string, std::string>> script_inputs(const config::Node& o,
                                                               const std::vector<ForwardArgument>& arguments) {
  std::string listed;
  for (const auto& a : arguments) listed += (listed.empty() ? "" : ", ") + a.name;
  const auto given = o.find("inputs");
  if (!given || given->is_null() || (given->is_map() && given->keys().empty())) {
    if (arguments.size() == 1 || (!arguments.empty() && arguments[1].has_default)) return {{"x", "batch.image"}};
    throw ConfigError(o.where() + ": the TorchScript module's forward takes (" + listed +
                      "); map each to a path with inputs: {" + (arguments.empty() ? "" : arguments[0].name) +
                      ": batch.image, ...}");
  }
  if (!given->is_map()) {
    throw ConfigError(given->where() + ": model inputs must be a map of argument -> path, e.g. {x: batch.image}");
  }
  std::vector<std::pair<std::string, std::string>> out;
  const auto keys = given->keys();
  // One input for a one-argument forward is passed whatever its name (kd's default name is x).
  if (keys.size() == 1 && !arguments.empty() &&
      std::count_if(arguments.begin(), arguments.end(), [](const auto& a) { return !a.has_default; }) <= 1 &&
      std::none_of(arguments.begin(), arguments.end(), [&](const auto& a) { return a.name == keys[0]; })) {
    return {{keys[0], given->get_string(keys[0])}};
  }
  for (const std::string& key : keys) {
    if (std::none_of(arguments.begin(), arguments.end(), [&](const auto& a) { return a.name == key; })) {
      throw ConfigError(given->child(key).where() + ": the TorchScript module's forward has no argument \"" + key +
                        "\"; it takes (" + listed + ")");
    }
    out.emplace_back(key, given->get_string(key));
  }
  for (const auto& a : arguments) {
    if (!a.has_default && std::find(keys.begin(), keys.end(), a.name) == keys.end()) {
      throw ConfigError(given->where() + ": the TorchScript module's forward needs \"" + a.name + "\" (it takes " +
                        listed + "); add " + a.name + ": <path> to inputs");
    }
  }
  return out;
}

class TorchScript : public Model {
 public:
  explicit TorchScript(const config::Node& o) : TorchScript(o, load_script(o)) {}

  Tree forward(const Tree& inputs) override {
    const auto& keys = input_keys();
    if (positional_) return to_tree(module_.forward({inputs.at(keys.front().first).tensor()}), output_key_);
    torch::jit::Kwargs kwargs;
    for (const auto& [name, path] : keys) kwargs.emplace(name, inputs.at(name).tensor());
    return to_tree(module_.get_method("forward")({}, kwargs), output_key_);
  }

  void train(bool on) override {
    Model::train(on);
    module_.train(on);
  }

 private:
  TorchScript(const config::Node& o, torch::jit::Module module)
      : TorchScript(o, module, forward_arguments(module, o)) {}  // a copy: a handle to the same module
  TorchScript(const config::Node& o, torch::jit::Module module, const std::vector<ForwardArgument>& arguments)
      : Model(o, script_inputs(o, arguments)),
        path_(o.get_string("path")),
        output_key_(o.get_string("output_key", "logits")),
        module_(std::move(module)) {
    // One input whose name is not one of forward's arguments goes first, by position.
    const std::string& name = input_keys().front().first;
    positional_ = input_keys().size() == 1 &&
                  std::none_of(arguments.begin(), arguments.end(), [&](const auto& a) { return a.name == name; });
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) share(p.name, p.value, /*buffer=*/false);
    for (const auto& b : module_.named_buffers(/*recurse=*/true)) share(b.name, b.value, /*buffer=*/true);
  }

  void share(const std::string& dotted, const torch::Tensor& t, bool buffer) {
    std::vector<std::string> parts;
    for (std::size_t start = 0;;) {
      const std::size_t dot = dotted.find('.', start);
      parts.push_back(dotted.substr(start, dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    const std::string leaf = parts.back();
    parts.pop_back();
    torch::nn::Module& owner = module_at(*this, parts);
    if (buffer) {
      owner.register_buffer(leaf, t);
    } else {
      owner.register_parameter(leaf, t, t.requires_grad());
    }
  }

  std::string path_;
  std::string output_key_;
  torch::jit::Module module_;
  bool positional_ = false;
};

}  // namespace

void detail::register_torchscript(config::Registry<Model>& r) {
  r.add(
      "TorchScript", [](const config::Node& o) { return std::make_shared<TorchScript>(o); },
      "path, inputs={forward's argument: path, ...} (default: batch.image for one argument), output_key=logits; "
      "starts from the file's weights");
}

}  // namespace kd::models
