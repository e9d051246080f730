#include "trainer/context/auxiliaries_state.h"

namespace kd::train {

Tree AuxiliariesState::to_tree() const {
  return Tree::dict(
      {{"loss_states", loss_states}, {"metric_states", metric_states}, {"summary_states", summary_states}});
}

AuxiliariesState AuxiliariesState::from_tree(const Tree& tree, std::shared_ptr<const Auxiliaries> auxiliaries) {
  const auto field = [&](const char* name) {
    const Tree* t = tree.is_dict() ? tree.find(name) : nullptr;
    return t ? *t : Tree();
  };
  return AuxiliariesState{.loss_states = field("loss_states"),
                          .metric_states = field("metric_states"),
                          .summary_states = field("summary_states"),
                          .auxiliaries = std::move(auxiliaries)};
}

}  // namespace kd::train
