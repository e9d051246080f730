// Registration of the built-in models (internal: users go through models::registry()).
#pragma once

#include "trainer/models/model.h"

namespace kd::models::detail {

// A batch of images as kd's sources give them, [B, H, W, C] (or [B, H, W] for one channel), as
// float [B, C, H, W] for a convolution (a view where it can be); a TypeError naming `model` for
// anything else. Integers are converted as they are.
torch::Tensor images_channels_first(torch::Tensor x, const char* model);

void register_mlp(config::Registry<Model>& registry);
void register_cnn(config::Registry<Model>& registry);
void register_resnet(config::Registry<Model>& registry);
void register_vit(config::Registry<Model>& registry);
void register_transformer(config::Registry<Model>& registry);
void register_gpt(config::Registry<Model>& registry);
void register_torchscript(config::Registry<Model>& registry);

}  // namespace kd::models::detail
