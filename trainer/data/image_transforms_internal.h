// Image transforms (registered in transform_registry()), on images [B, H, W] or [B, H, W, C]:
//
//   - {type: Resize, key: image, size: [224, 224], method: bilinear, antialias: true}
//       bilinear | nearest | bicubic | area; integer images stay integers (rounded, clamped)
//   - {type: CenterCrop, key: image, size: [200, 200]}
//   - {type: ResizeSmall, key: image, size: 256}: the smaller side to `size`, the aspect kept
//   - {type: RandomResizedCrop, key: image, size: [224, 224], scale: [0.08, 1], ratio: [0.75, 1.333]}
//       torchvision's: per image, a box of a random share `scale` of its area and aspect ratio
//       (log-uniform in `ratio`; 10 tries, then the centre crop), resized to `size` (bilinear,
//       antialiased). InceptionCrop is the same with Kauldron's scale [0.05, 1].
//   - {type: Rearrange, key: image, pattern: "h w c -> c h w"}
//       Kauldron's (einops) patterns, per example (the batch axis stays first): axes moved,
//       merged "(h w)" on the right, split on the left with axes_lengths: {h: 28}; "..." for the rest
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trainer/data/transforms.h"

namespace kd::data {

// kd::TypeError naming `what` unless `x` is images [B, H, W] or [B, H, W, C].
void check_images(const torch::Tensor& x, const std::string& what);
// The options every image transform reads alike: `size` [height, width] (each in [1, 65536]), and
// `method` (bilinear, the default, nearest, bicubic or area); kd::ConfigError naming the key.
std::pair<int64_t, int64_t> image_size_option(const config::Node& options);
std::string resize_method_option(const config::Node& options);

// `x` [B, H, W] or [B, H, W, C] resized to `size` (height, width) with LibTorch's interpolate.
torch::Tensor resize_images(const torch::Tensor& x, std::pair<int64_t, int64_t> size, const std::string& method,
                            bool antialias);

class Resize : public Transform {
 public:
  explicit Resize(const config::Node& options);
  Tree apply(const Tree& batch, at::Generator& gen) const override;

 private:
  std::string key_;
  std::pair<int64_t, int64_t> size_;
  std::string method_;
  bool antialias_;
};

class CenterCrop : public Transform {
 public:
  explicit CenterCrop(const config::Node& options);
  Tree apply(const Tree& batch, at::Generator& gen) const override;

 private:
  std::string key_;
  std::pair<int64_t, int64_t> size_;
};

class ResizeSmall : public Transform {
 public:
  explicit ResizeSmall(const config::Node& options);
  Tree apply(const Tree& batch, at::Generator& gen) const override;

 private:
  std::string key_;
  int64_t size_;
  std::string method_;
  bool antialias_;
};

class RandomResizedCrop : public Transform {
 public:
  // `default_scale`: the share of the area when the options give no `scale`.
  RandomResizedCrop(const config::Node& options, std::pair<double, double> default_scale);
  Tree apply(const Tree& batch, at::Generator& gen) const override;

 private:
  std::string key_;
  std::pair<int64_t, int64_t> size_;
  std::pair<double, double> scale_, ratio_;
};

class Rearrange : public Transform {
 public:
  explicit Rearrange(const config::Node& options);
  Tree apply(const Tree& batch, at::Generator& gen) const override;

 private:
  std::string key_, pattern_;
  std::vector<std::vector<std::string>> left_, right_;
  std::map<std::string, int64_t> lengths_;
};

}  // namespace kd::data
