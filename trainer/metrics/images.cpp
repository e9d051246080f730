// Image quality metrics: Psnr and Ssim, averaged over images.
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/metrics/metric.h"

namespace kd::metrics {
namespace {

void check_pair(const torch::Tensor& pred, const torch::Tensor& target, const Path& p, const Path& t,
                const char* metric) {
  if (pred.sizes() != target.sizes() || pred.dim() < 1) {
    throw TypeError(std::string(metric) + " needs pred and target images of the same shape [B, ...], but \"" + p.str() +
                    "\" is " + describe_tensor(pred) + " and \"" + t.str() + "\" is " + describe_tensor(target));
  }
}

// 10 log10(dynamic_range^2 / mse) per image (the mse over all of an image's pixels and channels),
// averaged over images.
class Psnr : public AverageMetric {
 public:
  explicit Psnr(const config::Node& o)
      : pred_(key(o, "pred")), target_(key(o, "target")), range_(o.get_double("dynamic_range", 1.0)) {
    if (!(range_ > 0)) throw ConfigError(o.where() + ": dynamic_range must be > 0");
  }

  Tree get_state(const train::Context& ctx) const override {
    const torch::Tensor pred = read(ctx, pred_).detach();
    const torch::Tensor target = read(ctx, target_).detach();
    check_pair(pred, target, pred_, target_, "Psnr");
    const auto type = torch::promote_types(pred.scalar_type(), torch::kFloat);
    const torch::Tensor diff = (pred.to(type) - target.to(type)).reshape({pred.size(0), -1});
    const torch::Tensor mse = diff.square().mean(1);
    const torch::Tensor psnr = 10.0 * torch::log10(range_ * range_ / mse);
    return AverageState::make(psnr.sum(), torch::scalar_tensor(static_cast<double>(pred.size(0)), psnr.options()));
  }

 private:
  Path pred_, target_;
  double range_;
};

// SSIM (Wang et al. 2004) as dm_pix.ssim: a Gaussian window (filter_size x filter_size, sigma
// filter_sigma), valid convolution, the SSIM map averaged over pixels and channels per image,
// then over images. Images are [B, H, W, C] (or [B, H, W]) with values in [0, dynamic_range].
class Ssim : public AverageMetric {
 public:
  explicit Ssim(const config::Node& o)
      : pred_(key(o, "pred")),
        target_(key(o, "target")),
        range_(o.get_double("dynamic_range", 1.0)),
        filter_size_(o.get_int("filter_size", 11)),
        filter_sigma_(o.get_double("filter_sigma", 1.5)),
        k1_(o.get_double_in("k1", 0.01, std::numeric_limits<double>::min(), 1.0)),
        k2_(o.get_double_in("k2", 0.03, std::numeric_limits<double>::min(), 1.0)) {
    if (!(range_ > 0)) throw ConfigError(o.where() + ": dynamic_range must be > 0");
    if (filter_size_ < 1) throw ConfigError(o.where() + ": filter_size must be >= 1");
    if (!(filter_sigma_ > 0)) throw ConfigError(o.where() + ": filter_sigma must be > 0");
    // The normalized 1-D Gaussian; the 2-D window is its outer product (the filter is separable).
    const torch::Tensor x = torch::arange(filter_size_, torch::kDouble) - static_cast<double>(filter_size_ - 1) / 2.0;
    torch::Tensor g = torch::exp(-0.5 * (x / filter_sigma_).square());
    g = g / g.sum();
    window_ = torch::outer(g, g).to(torch::kFloat);
  }

  Tree get_state(const train::Context& ctx) const override {
    torch::Tensor pred = read(ctx, pred_).detach();
    torch::Tensor target = read(ctx, target_).detach();
    check_pair(pred, target, pred_, target_, "Ssim");
    if (pred.dim() == 3) {
      pred = pred.unsqueeze(-1);
      target = target.unsqueeze(-1);
    }
    if (pred.dim() != 4 || pred.size(1) < filter_size_ || pred.size(2) < filter_size_) {
      throw TypeError("Ssim needs images [B, H, W, C] with H, W >= filter_size (" + std::to_string(filter_size_) +
                      "), but \"" + pred_.str() + "\" is " + describe_tensor(pred));
    }
    const auto type = torch::promote_types(pred.scalar_type(), torch::kFloat);
    const int64_t c = pred.size(3);
    // [B, H, W, C] -> [B, C, H, W]; each channel filtered on its own (groups = C).
    const torch::Tensor x = pred.to(type).permute({0, 3, 1, 2}).contiguous();
    const torch::Tensor y = target.to(type).permute({0, 3, 1, 2}).contiguous();
    const torch::Tensor weight =
        window_.to(x.device(), type).reshape({1, 1, filter_size_, filter_size_}).expand({c, 1, -1, -1}).contiguous();
    const std::vector<int64_t> ones{1, 1}, zeros{0, 0};
    auto filter = [&](const torch::Tensor& t) {
      return torch::conv2d(t, weight, torch::Tensor(), ones, zeros, ones, c);
    };
    const torch::Tensor mu_x = filter(x);
    const torch::Tensor mu_y = filter(y);
    const torch::Tensor var_x = filter(x * x) - mu_x.square();
    const torch::Tensor var_y = filter(y * y) - mu_y.square();
    const torch::Tensor cov = filter(x * y) - mu_x * mu_y;
    const double c1 = (k1_ * range_) * (k1_ * range_);
    const double c2 = (k2_ * range_) * (k2_ * range_);
    const torch::Tensor map =
        ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2));
    const torch::Tensor per_image = map.reshape({map.size(0), -1}).mean(1);
    return AverageState::make(per_image.sum(),
                              torch::scalar_tensor(static_cast<double>(per_image.size(0)), per_image.options()));
  }

 private:
  Path pred_, target_;
  double range_;
  int64_t filter_size_;
  double filter_sigma_, k1_, k2_;
  torch::Tensor window_;  // [filter_size, filter_size], sums to 1
};

}  // namespace

// Called once by registry() (registry.cpp).
void add_image_metrics(config::Registry<Metric>& r) {
  r.add<Psnr>("Psnr", "peak signal-to-noise ratio in dB, mean over images: pred, target, dynamic_range=1");
  r.add<Ssim>("Ssim",
              "structural similarity, images [B, H, W, C]: pred, target, dynamic_range=1, filter_size=11, "
              "filter_sigma=1.5, k1=0.01, k2=0.03");
}

}  // namespace kd::metrics
