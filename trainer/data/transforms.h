// Transforms applied to each batch (leaves [B, ...]; images [B, H, W] or [B, H, W, C]).
// Random transforms draw from a generator the pipeline seeds from (seed, epoch, batch), so a
// batch's content depends only on its position: resumable and identical across runs.
//
//   transforms:
//     - {type: ValueRange, key: image, in_vrange: [0, 255], vrange: [0, 1]}
//     - {type: RandomCrop, key: image, size: [28, 28], padding: 2}
//     - {type: RandomFlip, key: image}
//     - {type: Elements, keep: [image, label]}
#pragma once

#include <memory>

#include <ATen/core/Generator.h>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"
#include "trainer/tree/tree.h"

namespace kd::data {

class Transform {
 public:
  virtual ~Transform() = default;
  virtual Tree apply(const Tree& batch, at::Generator& gen) const = 0;
};

using TransformPtr = std::shared_ptr<const Transform>;

// ValueRange, Normalize, Cast, Reshape, OneHot, RandomFlip, RandomCrop, Elements, and the image
// transforms Resize, CenterCrop, Rearrange (image_transforms_internal.h).
config::Registry<Transform>& transform_registry();

}  // namespace kd::data
