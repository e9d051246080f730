#include "trainer/models/builtins.h"

namespace kd::models {

config::Registry<Model>& registry() {
  static config::Registry<Model>* registry = [] {
    auto* r = new config::Registry<Model>("model");
    detail::register_mlp(*r);
    detail::register_cnn(*r);
    detail::register_transformer(*r);
    detail::register_torchscript(*r);
    return r;
  }();
  return *registry;
}

}  // namespace kd::models
