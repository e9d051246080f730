// Registration of the built-in models (internal: users go through models::registry()).
#pragma once

#include "trainer/models/model.h"

namespace kd::models::detail {

void register_mlp(config::Registry<Model>& registry);
void register_cnn(config::Registry<Model>& registry);
void register_resnet(config::Registry<Model>& registry);
void register_transformer(config::Registry<Model>& registry);
void register_torchscript(config::Registry<Model>& registry);

}  // namespace kd::models::detail
