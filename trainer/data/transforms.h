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
#include <vector>

#include <ATen/core/Generator.h>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"
#include "trainer/tree/tree.h"

namespace kd::data {

class Transform {
 public:
  virtual ~Transform() = default;
  virtual Tree apply(const Tree& batch, at::Generator& gen) const = 0;

  // A random-access source's examples are each transformed on their own: a batch of one, with a
  // generator of its own. A transform that gives the same result for all of them at once says so
  // here, and apply_each transforms their stack: row i exactly as apply() transforms example i
  // alone with generators[i]. The pipeline then runs it on the stacked examples whenever their
  // shapes agree, saving a call per example. A transform that draws nothing and treats each
  // example alone returns true and keeps the default apply_each (apply on the stack); one that
  // draws overrides apply_each too.
  virtual bool applies_each() const { return false; }
  virtual Tree apply_each(const Tree& examples, std::vector<at::Generator>& generators) const {
    return apply(examples, generators.front());
  }
};

using TransformPtr = std::shared_ptr<const Transform>;

// ValueRange, Normalize, Cast, Reshape, OneHot, RandomFlip, RandomCrop, Elements, and the image
// transforms Resize, CenterCrop, Rearrange (image_transforms_internal.h).
config::Registry<Transform>& transform_registry();

}  // namespace kd::data
