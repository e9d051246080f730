#include "trainer/models/builtins_internal.h"

namespace kd::models {

config::Registry<Model>& registry() {
  return config::Registry<Model>::built_once("model", [](config::Registry<Model>& r) {
    detail::register_mlp(r);
    detail::register_cnn(r);
    detail::register_resnet(r);
    detail::register_vit(r);
    detail::register_transformer(r);
    detail::register_gpt(r);
    detail::register_torchscript(r);
  });
}

}  // namespace kd::models
