// torch::optim's archive of an optimizer's state (Optimizer::save), read without
// Optimizer::load: the same code for LibTorch 1.13 and 2.x.
#include <string>
#include <unordered_map>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>

#include "trainer/common/error.h"
#include "trainer/optim/optimizer_state.h"

namespace kd::optim {
namespace {

int64_t count(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor n;
  if (!archive.try_read(key, n) || n.numel() != 1 || !c10::isIntegralType(n.scalar_type(), /*includeBool=*/false))
    throw CorruptionError("the optimizer archive has no count " + key);
  return n.item<int64_t>();
}

}  // namespace

Tree optimizer_state_from_archive(torch::serialize::InputArchive& archive, const torch::optim::Optimizer& optimizer,
                                  const torch::nn::Module& module) {
  std::unordered_map<const void*, std::string> names;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    names.emplace(item.value().unsafeGetTensorImpl(), item.key());
  torch::serialize::InputArchive states;
  if (!archive.try_read("state", states)) throw CorruptionError("the optimizer archive has no state");
  torch::serialize::InputArchive group_list;
  if (!archive.try_read("param_groups", group_list)) throw CorruptionError("the optimizer archive has no param_groups");
  const auto& groups = optimizer.param_groups();
  const int64_t saved_groups = count(group_list, "param_groups/size");
  if (saved_groups != static_cast<int64_t>(groups.size())) {
    throw CorruptionError("the optimizer archive has " + std::to_string(saved_groups) +
                          " parameter groups, the optimizer " + std::to_string(groups.size()));
  }
  Tree out = Tree::dict();
  for (std::size_t g = 0; g < groups.size(); ++g) {
    const std::string where = "param_groups/" + std::to_string(g);
    torch::serialize::InputArchive group;
    if (!group_list.try_read(where, group)) throw CorruptionError("the optimizer archive has no " + where);
    const auto& params = groups[g].params();
    const int64_t saved_params = count(group, "params/size");
    if (saved_params != static_cast<int64_t>(params.size())) {
      throw CorruptionError("the optimizer archive's " + where + " has " + std::to_string(saved_params) +
                            " parameters, the optimizer's " + std::to_string(params.size()));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      c10::IValue key;
      if (!group.try_read("params/" + std::to_string(i), key) || !key.isString())
        throw CorruptionError("the optimizer archive's " + where + " does not name parameter " + std::to_string(i));
      torch::serialize::InputArchive fields;
      if (!states.try_read(key.toStringRef(), fields)) continue;  // no state yet (no step taken)
      const auto name = names.find(params[i].unsafeGetTensorImpl());
      if (name == names.end()) continue;  // a parameter the optimizer has but the model does not name
      Tree state = Tree::dict();
      for (const std::string& field : fields.keys()) {
        c10::IValue value;
        fields.read(field, value);
        if (value.isTensor()) {
          state.insert(field, value.toTensor());
        } else if (value.isInt()) {
          state.insert(field, value.toInt());
        } else if (value.isBool()) {
          continue;  // TorchScript's own attributes of an archive ("training")
        } else {
          throw CorruptionError("the optimizer archive's state " + name->second + "." + field + " is a " +
                                value.tagKind() + ", not a tensor or a count");
        }
      }
      out = out.set(Path::from_dotted(name->second), std::move(state));
    }
  }
  return out;
}

}  // namespace kd::optim
