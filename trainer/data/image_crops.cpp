// ResizeSmall and RandomResizedCrop / InceptionCrop (image_transforms_internal.h): the transforms
// of an ImageNet-style run on pictures of their original sizes.
#include <cmath>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/data/image_transforms_internal.h"

namespace kd::data {
namespace {

std::pair<double, double> pair_option(const config::Node& o, const char* key, std::pair<double, double> def,
                                      double min) {
  const auto v = o.get_double_list(key, std::vector<double>{def.first, def.second});
  if (v.size() != 2 || !(v[0] > min) || !(v[0] <= v[1])) {
    throw ConfigError((o.has(key) ? o.child(key).where() : o.where()) + ": " + key + " must be [low, high] with " +
                      std::to_string(min) + " < low <= high");
  }
  return {v[0], v[1]};
}

double uniform(at::Generator& gen, double low, double high) {
  return low + (high - low) * at::rand({1}, gen, torch::kDouble).item<double>();
}

int64_t below(at::Generator& gen, int64_t n) { return n <= 1 ? 0 : at::randint(n, {1}, gen).item<int64_t>(); }

}  // namespace

ResizeSmall::ResizeSmall(const config::Node& o)
    : key_(o.get_string("key", "image")),
      size_(o.get_int_in("size", std::nullopt, 1, 1 << 16)),
      method_(resize_method_option(o)),
      antialias_(o.get_bool("antialias", true)) {}

Tree ResizeSmall::apply(const Tree& batch, at::Generator&) const {
  const torch::Tensor& x = batch.get(key_).tensor();
  check_images(x, "ResizeSmall");
  const double h = static_cast<double>(x.size(1)), w = static_cast<double>(x.size(2));
  const double factor = static_cast<double>(size_) / std::min(h, w);
  const std::pair<int64_t, int64_t> size{std::max<int64_t>(1, std::llround(h * factor)),
                                         std::max<int64_t>(1, std::llround(w * factor))};
  Tree out = batch;
  out.insert(key_, resize_images(x, size, method_, antialias_));
  return out;
}

RandomResizedCrop::RandomResizedCrop(const config::Node& o, std::pair<double, double> default_scale)
    : key_(o.get_string("key", "image")),
      scale_(pair_option(o, "scale", default_scale, 0.0)),
      ratio_(pair_option(o, "ratio", {3.0 / 4.0, 4.0 / 3.0}, 0.0)) {
  size_ = image_size_option(o);
  if (scale_.second > 1.0) throw ConfigError(o.child("scale").where() + ": scale is a share of the area, at most 1");
}

Tree RandomResizedCrop::apply(const Tree& batch, at::Generator& gen) const {
  const torch::Tensor& x = batch.get(key_).tensor();
  check_images(x, "RandomResizedCrop");
  const int64_t height = x.size(1), width = x.size(2);
  const double area = static_cast<double>(height * width);
  const double log_low = std::log(ratio_.first), log_high = std::log(ratio_.second);
  std::vector<torch::Tensor> crops;
  for (int64_t b = 0; b < x.size(0); ++b) {
    int64_t top = 0, left = 0, h = 0, w = 0;
    bool found = false;
    for (int attempt = 0; attempt < 10 && !found; ++attempt) {
      const double target = area * uniform(gen, scale_.first, scale_.second);
      const double aspect = std::exp(uniform(gen, log_low, log_high));
      w = std::llround(std::sqrt(target * aspect));
      h = std::llround(std::sqrt(target / aspect));
      if (w > 0 && h > 0 && w <= width && h <= height) {
        top = below(gen, height - h + 1);
        left = below(gen, width - w + 1);
        found = true;
      }
    }
    if (!found) {  // the centre crop, its aspect ratio brought into `ratio`
      const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
      if (in_ratio < ratio_.first) {
        w = width;
        h = std::llround(static_cast<double>(w) / ratio_.first);
      } else if (in_ratio > ratio_.second) {
        h = height;
        w = std::llround(static_cast<double>(h) * ratio_.second);
      } else {
        w = width;
        h = height;
      }
      top = (height - h) / 2;
      left = (width - w) / 2;
    }
    const torch::Tensor crop = x.narrow(0, b, 1).narrow(1, top, h).narrow(2, left, w);
    crops.push_back(resize_images(crop, size_, "bilinear", /*antialias=*/true));
  }
  Tree out = batch;
  out.insert(key_, torch::cat(crops));
  return out;
}

}  // namespace kd::data
