// The image transforms of a user's own pictures: Resize, CenterCrop (images [B, H, W] or
// [B, H, W, C], channels last) and Rearrange (einops patterns, as Kauldron's).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <type_traits>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/data/image_transforms_internal.h"

namespace kd::data {

void check_images(const torch::Tensor& x, const std::string& what) {
  if (x.dim() != 3 && x.dim() != 4) {
    throw TypeError(what + " needs images [batch, height, width] or [batch, height, width, channels], got " +
                    describe_tensor(x));
  }
}

std::pair<int64_t, int64_t> image_size_option(const config::Node& o) {
  const auto size = o.get_int_list_in("size", std::nullopt, 1, 1 << 16);
  if (size.size() != 2) throw ConfigError(o.child("size").where() + ": size must be [height, width]");
  return {size[0], size[1]};
}

std::string resize_method_option(const config::Node& o) {
  std::string method = o.get_string("method", "bilinear");
  if (method != "bilinear" && method != "nearest" && method != "bicubic" && method != "area") {
    throw ConfigError(o.child("method").where() + ": method must be bilinear, nearest, bicubic or area, got \"" +
                      method + "\"");
  }
  return method;
}

Resize::Resize(const config::Node& o)
    : key_(o.get_string("key", "image")),
      size_(image_size_option(o)),
      method_(resize_method_option(o)),
      antialias_(o.get_bool("antialias", true)) {}

namespace {

// The taps of a separable antialiased bilinear resampling from `in` to `out` samples, as Pillow's
// and LibTorch's antialiased interpolate compute them: the triangle filter widened by the
// downscaling factor, centred on each output sample's centre, normalised.
struct Taps {
  std::vector<int64_t> first, count;
  std::vector<float> weights;  // `width` per output sample
  int64_t width = 0;
};

Taps bilinear_taps(int64_t in, int64_t out) {
  Taps t;
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double widen = std::max(scale, 1.0);
  const double support = widen;  // the triangle's half-width (1) widened
  t.width = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.weights.assign(static_cast<std::size_t>(out * t.width), 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    const double center = (static_cast<double>(i) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    double total = 0;
    std::vector<double> w(static_cast<std::size_t>(std::max<int64_t>(hi - lo, 0)));
    for (int64_t k = 0; k < hi - lo; ++k) {
      const double d = std::abs((static_cast<double>(k + lo) - center + 0.5) / widen);
      w[static_cast<std::size_t>(k)] = d < 1.0 ? 1.0 - d : 0.0;
      total += w[static_cast<std::size_t>(k)];
    }
    for (int64_t k = 0; k < hi - lo; ++k) {
      t.weights[static_cast<std::size_t>(i * t.width + k)] =
          static_cast<float>(total > 0 ? w[static_cast<std::size_t>(k)] / total : 0.0);
    }
    t.first.push_back(lo);
    t.count.push_back(std::min(hi - lo, t.width));
  }
  return t;
}

// One uint8 image [H, W, C] (any strides: a crop is a view) resized with antialiased bilinear
// taps: rows, then columns, in float, rounded once. A pass over the pixels per direction, where
// LibTorch's interpolate converts to float and back and lays out channels first.
torch::Tensor resize_uint8(const torch::Tensor& image, int64_t out_h, int64_t out_w) {
  const int64_t in_h = image.size(0), in_w = image.size(1), c = image.size(2);
  const int64_t sh = image.stride(0), sw = image.stride(1), sc = image.stride(2);
  const uint8_t* src = image.data_ptr<uint8_t>();
  const Taps across = bilinear_taps(in_w, out_w), down = bilinear_taps(in_h, out_h);
  std::vector<float> rows(static_cast<std::size_t>(in_h * out_w * c));
  // The channels' count known to the compiler for the usual 1 and 3 (registers, no inner loop).
  const auto horizontal = [&]<int64_t kC>(std::integral_constant<int64_t, kC>) {
    const int64_t channels = kC > 0 ? kC : c;
    for (int64_t y = 0; y < in_h; ++y) {
      for (int64_t x = 0; x < out_w; ++x) {
        const float* w = &across.weights[static_cast<std::size_t>(x * across.width)];
        const uint8_t* at = src + y * sh + across.first[static_cast<std::size_t>(x)] * sw;
        float* to = &rows[static_cast<std::size_t>((y * out_w + x) * channels)];
        const int64_t taps = across.count[static_cast<std::size_t>(x)];
        for (int64_t ch = 0; ch < channels; ++ch) {
          float acc = 0;
          for (int64_t k = 0; k < taps; ++k) acc += w[k] * static_cast<float>(at[k * sw + ch * sc]);
          to[ch] = acc;
        }
      }
    }
  };
  if (c == 3) {
    horizontal(std::integral_constant<int64_t, 3>{});
  } else if (c == 1) {
    horizontal(std::integral_constant<int64_t, 1>{});
  } else {
    horizontal(std::integral_constant<int64_t, 0>{});
  }
  torch::Tensor out = torch::empty({out_h, out_w, c}, torch::kByte);
  uint8_t* dst = out.data_ptr<uint8_t>();
  const int64_t row = out_w * c;
  std::vector<float> acc(static_cast<std::size_t>(row));
  for (int64_t y = 0; y < out_h; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const float* w = &down.weights[static_cast<std::size_t>(y * down.width)];
    for (int64_t k = 0; k < down.count[static_cast<std::size_t>(y)]; ++k) {
      const float* from = &rows[static_cast<std::size_t>((down.first[static_cast<std::size_t>(y)] + k) * row)];
      for (int64_t i = 0; i < row; ++i) acc[static_cast<std::size_t>(i)] += w[k] * from[i];
    }
    for (int64_t i = 0; i < row; ++i) {
      dst[y * row + i] =
          static_cast<uint8_t>(std::clamp(std::nearbyint(acc[static_cast<std::size_t>(i)]), 0.0f, 255.0f));
    }
  }
  return out;
}

}  // namespace

torch::Tensor resize_images(const torch::Tensor& x, std::pair<int64_t, int64_t> size, const std::string& method,
                            bool antialias) {
  check_images(x, "Resize");
  if (x.scalar_type() == torch::kByte && method == "bilinear" && antialias && x.device().is_cpu()) {
    std::vector<torch::Tensor> out;
    for (int64_t b = 0; b < x.size(0); ++b) {
      const torch::Tensor image = x.dim() == 4 ? x[b] : x[b].unsqueeze(2);
      const torch::Tensor resized = resize_uint8(image, size.first, size.second);
      out.push_back(x.dim() == 4 ? resized : resized.squeeze(2));
    }
    return torch::stack(out);
  }
  namespace F = torch::nn::functional;
  const bool channels = x.dim() == 4;
  torch::Tensor nchw = (channels ? x.permute({0, 3, 1, 2}) : x.unsqueeze(1)).to(torch::kFloat);
  auto options = F::InterpolateFuncOptions().size(std::vector<int64_t>{size.first, size.second});
  if (method == "nearest") {
    options.mode(torch::kNearest);
  } else if (method == "area") {
    options.mode(torch::kArea);
  } else {
    if (method == "bicubic") {
      options.mode(torch::kBicubic);
    } else {
      options.mode(torch::kBilinear);
    }
    options.align_corners(false).antialias(antialias);
  }
  torch::Tensor y = F::interpolate(nchw, options);
  y = channels ? y.permute({0, 2, 3, 1}).contiguous() : y.squeeze(1);
  if (x.is_floating_point()) return y.to(x.scalar_type());
  // Integer images stay integers: rounded, and clamped to their type's range (bicubic overshoots).
  if (x.scalar_type() == torch::kByte) y = y.clamp(0, 255);
  return y.round().to(x.scalar_type());
}

Tree Resize::apply(const Tree& batch, at::Generator&) const {
  Tree out = batch;
  out.insert(key_, resize_images(batch.get(key_).tensor(), size_, method_, antialias_));
  return out;
}

CenterCrop::CenterCrop(const config::Node& o) : key_(o.get_string("key", "image")), size_(image_size_option(o)) {}

Tree CenterCrop::apply(const Tree& batch, at::Generator&) const {
  const torch::Tensor& x = batch.get(key_).tensor();
  check_images(x, "CenterCrop");
  const int64_t h = x.size(1), w = x.size(2);
  if (size_.first > h || size_.second > w) {
    throw TypeError("CenterCrop size [" + std::to_string(size_.first) + ", " + std::to_string(size_.second) +
                    "] is larger than the images " + describe_tensor(x) + " (Resize first)");
  }
  Tree out = batch;
  out.insert(key_, x.narrow(1, (h - size_.first) / 2, size_.first).narrow(2, (w - size_.second) / 2, size_.second));
  return out;
}

// ---- Rearrange ---------------------------------------------------------------------------------

namespace {

using Groups = std::vector<std::vector<std::string>>;  // "a (b c) ..." -> {a}, {b, c}, {...}

Groups parse_side(const std::string& side, const std::string& where) {
  Groups groups;
  bool open = false;
  std::size_t i = 0;
  while (i < side.size()) {
    const char c = side[i];
    if (c == ' ') {
      ++i;
    } else if (c == '(') {
      if (open) throw ConfigError(where + ": nested brackets in the pattern \"" + side + "\"");
      open = true;
      groups.emplace_back();
      ++i;
    } else if (c == ')') {
      if (!open) throw ConfigError(where + ": \")\" without \"(\" in \"" + side + "\"");
      open = false;
      ++i;
    } else {
      std::size_t j = i;
      while (j < side.size() && side[j] != ' ' && side[j] != '(' && side[j] != ')') ++j;
      const std::string name = side.substr(i, j - i);
      const bool valid = name == "..." || std::all_of(name.begin(), name.end(), [](char ch) {
                           return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
                         });
      if (!valid) throw ConfigError(where + ": \"" + name + "\" is not an axis name in the pattern");
      if (name == "..." && open) throw ConfigError(where + ": \"...\" cannot be inside brackets");
      if (open) {
        groups.back().push_back(name);
      } else {
        groups.push_back({name});
      }
      i = j;
    }
  }
  if (open) throw ConfigError(where + ": \"(\" without \")\" in \"" + side + "\"");
  return groups;
}

std::vector<std::string> names_of(const Groups& groups) {
  std::vector<std::string> out;
  for (const auto& g : groups) out.insert(out.end(), g.begin(), g.end());
  return out;
}

}  // namespace

Rearrange::Rearrange(const config::Node& o) : key_(o.get_string("key", "image")), pattern_(o.get_string("pattern")) {
  const std::string where = o.child("pattern").where();
  const auto arrow = pattern_.find("->");
  if (arrow == std::string::npos) {
    throw ConfigError(where + ": a pattern is \"left -> right\", e.g. \"h w c -> c h w\", got \"" + pattern_ + "\"");
  }
  left_ = parse_side(pattern_.substr(0, arrow), where);
  right_ = parse_side(pattern_.substr(arrow + 2), where);
  const auto a = names_of(left_), b = names_of(right_);
  std::multiset<std::string> ma(a.begin(), a.end()), mb(b.begin(), b.end());
  for (const auto& n : a) {
    if (ma.count(n) > 1) throw ConfigError(where + ": the axis \"" + n + "\" appears twice on the left");
  }
  if (ma != mb) {
    throw ConfigError(where + ": both sides of \"" + pattern_ +
                      "\" must name the same axes, each once (kd's Rearrange moves, splits and merges axes)");
  }
  if (auto lengths = o.find("axes_lengths"); lengths && !lengths->is_null()) {
    for (const auto& name : lengths->keys())
      lengths_[name] = lengths->get_int_in(name, std::nullopt, 1, std::numeric_limits<int64_t>::max());
  }
}

Tree Rearrange::apply(const Tree& batch, at::Generator&) const {
  const torch::Tensor& x = batch.get(key_).tensor();
  // Each example is rearranged: the batch dimension stays first.
  int64_t named = 0;
  bool ellipsis = false;
  for (const auto& g : left_) (g.front() == "...") ? (void)(ellipsis = true) : (void)++named;
  const int64_t example_dims = x.dim() - 1;
  if (example_dims < named || (!ellipsis && example_dims != named)) {
    throw TypeError("Rearrange \"" + pattern_ + "\": its left side names " + std::to_string(named) +
                    " axes, but each example of \"" + key_ + "\" has " + std::to_string(example_dims) + " (" +
                    describe_tensor(x) + ")");
  }
  // The elementary axes and their lengths.
  std::vector<int64_t> shape{x.size(0)};
  std::map<std::string, int64_t> length;
  std::vector<std::string> order{""};  // "" is the batch axis
  int64_t dim = 1;
  const int64_t ellipsis_dims = example_dims - named;
  for (const auto& g : left_) {
    if (g.front() == "...") {
      for (int64_t i = 0; i < ellipsis_dims; ++i, ++dim) {
        const std::string name = "...#" + std::to_string(i);
        length[name] = x.size(dim);
        shape.push_back(x.size(dim));
        order.push_back(name);
      }
      continue;
    }
    const int64_t total = x.size(dim++);
    int64_t known = 1;
    std::string unknown;
    for (const auto& n : g) {
      if (g.size() == 1) {
        length[n] = total;
      } else if (auto it = lengths_.find(n); it != lengths_.end()) {
        length[n] = it->second;
        known *= it->second;
      } else if (unknown.empty()) {
        unknown = n;
      } else {
        throw ConfigError("Rearrange \"" + pattern_ + "\": give axes_lengths for all but one of (" + n + " ...)");
      }
    }
    if (g.size() > 1) {
      if (unknown.empty() ? known != total : known <= 0 || total % known != 0) {
        throw TypeError("Rearrange \"" + pattern_ + "\": an axis of length " + std::to_string(total) +
                        " cannot be split by axes_lengths");
      }
      if (!unknown.empty()) length[unknown] = total / known;
    }
    for (const auto& n : g) {
      shape.push_back(length[n]);
      order.push_back(n);
    }
  }
  // Permute to the right side's order, then merge its groups.
  std::vector<int64_t> permutation{0}, merged{x.size(0)};
  for (const auto& g : right_) {
    int64_t size = 1;
    std::vector<std::string> names = g;
    if (g.front() == "...") {
      names.clear();
      for (int64_t i = 0; i < ellipsis_dims; ++i) names.push_back("...#" + std::to_string(i));
    }
    for (const auto& n : names) {
      permutation.push_back(std::find(order.begin(), order.end(), n) - order.begin());
      size *= length[n];
      if (g.front() == "...") merged.push_back(length[n]);
    }
    if (g.front() != "...") merged.push_back(size);
  }
  Tree out = batch;
  out.insert(key_, x.reshape(shape).permute(permutation).reshape(merged));
  return out;
}

}  // namespace kd::data
