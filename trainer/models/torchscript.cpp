// TorchScript: trains a module saved with torch.jit.save (Python) or torch::jit::Module::save.
//   model: {type: TorchScript, path: model.pt, inputs: {x: batch.image}, output_key: logits}
// Its parameters and buffers are registered on this module under the same dotted names
// (sharing storage), so params/collections, optimizers and checkpoints see them as for any
// other model. A tensor output becomes preds.<output_key>; a dict output (str -> tensor)
// becomes preds itself; a tuple or list becomes a list.
#include <filesystem>
#include <string>
#include <system_error>

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

class TorchScript : public Model {
 public:
  explicit TorchScript(const config::Node& o)
      : Model(o, {{"x", "batch.image"}}),
        path_(o.get_string("path")),
        output_key_(o.get_string("output_key", "logits")) {
    std::error_code error;
    if (!std::filesystem::is_regular_file(path_, error)) {
      throw IOError(o.child("path").where() + ": the TorchScript file \"" + path_ + "\" " +
                    (std::filesystem::exists(path_, error) ? "is not a regular file" : "does not exist") +
                    " (a relative path is from the directory kd runs in, " +
                    std::filesystem::current_path(error).string() + "); save one with torch.jit.save");
    }
    try {
      module_ = torch::jit::load(path_);
    } catch (const c10::Error& e) {
      throw IOError(o.where() + ": cannot load the TorchScript file \"" + path_ +
                    "\": " + e.msg().substr(0, e.msg().find('\n')));
    }
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) share(p.name, p.value, /*buffer=*/false);
    for (const auto& b : module_.named_buffers(/*recurse=*/true)) share(b.name, b.value, /*buffer=*/true);
  }

  Tree forward(const Tree& inputs) override {
    std::vector<c10::IValue> args;
    for (const auto& [name, path] : input_keys()) args.emplace_back(inputs.at(name).tensor());
    return to_tree(module_.forward(args), output_key_);
  }

  void train(bool on) override {
    Model::train(on);
    module_.train(on);
  }

 private:
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
};

}  // namespace

void detail::register_torchscript(config::Registry<Model>& r) {
  r.add(
      "TorchScript", [](const config::Node& o) { return std::make_shared<TorchScript>(o); },
      "path, inputs={x: batch.image}, output_key=logits");
}

}  // namespace kd::models
