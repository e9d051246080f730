// Image summaries: the first images of the run (or of an eval) side by side in one grid.
#include <algorithm>
#include <memory>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/summaries/summary.h"

namespace kd::summaries {
namespace {

// Images as float [B, H, W, C] with C in {1, 3}, from [B, H, W], [B, H, W, C] or channels-first
// [B, C, H, W] (told apart by C in {1, 3} on axis 1 and not on the last axis).
torch::Tensor to_bhwc(const torch::Tensor& images, const Path& path) {
  auto is_channels = [](int64_t n) { return n == 1 || n == 3; };
  torch::Tensor out;
  if (images.dim() == 3) {
    out = images.unsqueeze(-1);
  } else if (images.dim() == 4 && is_channels(images.size(3))) {
    out = images;
  } else if (images.dim() == 4 && is_channels(images.size(1))) {
    out = images.permute({0, 2, 3, 1});
  } else {
    throw TypeError("\"" + path.str() +
                    "\" must hold images [B, H, W], [B, H, W, C] or [B, C, H, W] with C "
                    "in {1, 3}, but it is " +
                    describe_tensor(images));
  }
  return out.to(torch::kFloat);
}

// The base of both: the state keeps the first num_images images on the CPU; compute maps
// in_vrange to 0..255 and lays them out in a row with a 1-pixel black gap.
class ImageGrid : public Summary {
 public:
  explicit ImageGrid(const config::Node& o) : num_images_(o.get_int("num_images", 5)) {
    if (num_images_ < 1) throw ConfigError(o.where() + ": num_images must be >= 1");
    const auto range = o.get_double_list("in_vrange", std::vector<double>{0.0, 1.0});
    if (range.size() != 2 || !(range[1] > range[0])) {
      throw ConfigError(o.where() + ": in_vrange must be [min, max] with min < max");
    }
    lo_ = range[0];
    hi_ = range[1];
  }

  Kind kind() const override { return Kind::kImages; }

  Tree merge(const Tree& a, const Tree& b) const override {
    return metrics::CollectFirstState::merge(a, b, num_images_);
  }

  Tree compute(const Tree& state) const override {
    if (state.is_none()) return Tree();
    const torch::Tensor images = state.tensor();  // [N, H, W, C]
    const int64_t n = images.size(0), h = images.size(1), w = images.size(2), c = images.size(3);
    const torch::Tensor scaled = ((images - lo_) / (hi_ - lo_) * 255.0).round().clamp(0, 255);
    torch::Tensor grid = torch::zeros({h, n * w + std::max<int64_t>(n - 1, 0), c}, torch::kFloat);
    for (int64_t i = 0; i < n; ++i) grid.narrow(1, i * (w + 1), w).copy_(scaled[i]);
    return grid.to(torch::kUInt8);
  }

 protected:
  // The first num_images images, detached, as float [N, H, W, C] on the CPU.
  Tree first_images(const torch::Tensor& images, const Path& path) const {
    torch::Tensor t = images.detach();
    if (t.dim() > 0 && t.size(0) > num_images_) t = t.narrow(0, 0, num_images_);
    return to_bhwc(t, path).to(torch::kCPU);
  }

 private:
  int64_t num_images_;
  double lo_, hi_;
};

class ShowImages : public ImageGrid {
 public:
  explicit ShowImages(const config::Node& o) : ImageGrid(o), images_(key(o, "images", "batch.image")) {}

  Tree get_state(const train::Context& ctx) const override { return first_images(read(ctx, images_), images_); }

 private:
  Path images_;
};

// |images1 - images2|, e.g. a reconstruction's error.
class ShowDifferenceImages : public ImageGrid {
 public:
  explicit ShowDifferenceImages(const config::Node& o)
      : ImageGrid(o), images1_(key(o, "images1")), images2_(key(o, "images2")) {}

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor a = read(ctx, images1_);
    const torch::Tensor b = read(ctx, images2_);
    if (a.sizes() != b.sizes()) {
      throw TypeError("ShowDifferenceImages: \"" + images1_.str() + "\" is " + describe_tensor(a) + " but \"" +
                      images2_.str() + "\" is " + describe_tensor(b));
    }
    return first_images((a.to(torch::kFloat) - b.to(torch::kFloat)).abs(), images1_);
  }

 private:
  Path images1_, images2_;
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_image_summaries(config::Registry<Summary>& r) {
  r.add<ShowImages>("ShowImages", "a row of the first images: images=batch.image, num_images=5, in_vrange=[0, 1]");
  r.add<ShowDifferenceImages>("ShowDifferenceImages",
                              "a row of |images1 - images2|: images1, images2, num_images=5, in_vrange=[0, 1]");
}

}  // namespace kd::summaries
