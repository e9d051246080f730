#include "trainer/data/transforms.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/data/image_transforms_internal.h"

namespace kd::data {
namespace {

// The base of transforms that change one batch field, named by `key`.
class KeyTransform : public Transform {
 public:
  // `each`: whether map_each gives each row as map() gives it alone (see Transform::applies_each).
  KeyTransform(const config::Node& o, const char* default_key, bool each = false)
      : key_(o.get_string("key", default_key)), each_(each) {}

  Tree apply(const Tree& batch, at::Generator& gen) const override {
    Tree out = batch;
    out.insert(key_, map(leaf(batch), gen));
    return out;
  }
  bool applies_each() const override { return each_; }
  Tree apply_each(const Tree& examples, std::vector<at::Generator>& generators) const override {
    Tree out = examples;
    out.insert(key_, map_each(leaf(examples), generators));
    return out;
  }

 protected:
  virtual torch::Tensor map(const torch::Tensor& x, at::Generator& gen) const = 0;
  // Row i as map() transforms it alone with generators[i]; a transform that draws nothing has it.
  virtual torch::Tensor map_each(const torch::Tensor& x, std::vector<at::Generator>& generators) const {
    return map(x, generators.front());
  }
  std::string key_;

 private:
  const torch::Tensor& leaf(const Tree& batch) const {
    const Tree* value = batch.find(key_);
    if (value == nullptr || !value->is_tensor()) {
      std::string message = "transform on key \"" + key_ + "\": the batch has " + join_names(batch.keys());
      const auto close = nearest(key_, batch.keys(), 1);
      if (!close.empty()) message += ". Did you mean \"" + close.front() + "\"?";
      throw KeyError(message);
    }
    return value->tensor();
  }
  bool each_;
};

std::pair<double, double> range(const config::Node& o, const char* key, std::pair<double, double> def) {
  const auto v = o.get_double_list(key, std::vector<double>{def.first, def.second});
  if (v.size() != 2 || v[0] >= v[1]) throw ConfigError(o.where() + ": " + key + " must be [min, max] with min < max");
  return {v[0], v[1]};
}

class ValueRange : public KeyTransform {
 public:
  explicit ValueRange(const config::Node& o)
      : KeyTransform(o, "image", /*each=*/true),
        in_(range(o, "in_vrange", {0, 255})),
        out_(range(o, "vrange", {0, 1})) {}
  torch::Tensor map(const torch::Tensor& x, at::Generator&) const override {
    const double scale = (out_.second - out_.first) / (in_.second - in_.first);
    // In place on the one new float tensor; the steps that change nothing are left out.
    torch::Tensor y = x.to(torch::kFloat, /*non_blocking=*/false, /*copy=*/true);
    if (in_.first != 0) y.sub_(in_.first);
    if (scale != 1) y.mul_(scale);
    if (out_.first != 0) y.add_(out_.first);
    return y;
  }

 private:
  std::pair<double, double> in_, out_;
};

class Normalize : public KeyTransform {
 public:
  explicit Normalize(const config::Node& o)
      : KeyTransform(o, "image", /*each=*/true),
        mean_(torch::tensor(o.get_double_list("mean")).to(torch::kFloat)),
        std_(torch::tensor(o.get_double_list("std")).to(torch::kFloat)) {
    if (mean_.numel() != std_.numel()) throw ConfigError(o.where() + ": mean and std must have the same length");
    if ((std_ <= 0).any().item<bool>()) throw ConfigError(o.where() + ": std must be > 0");
  }
  // mean/std have one value, or one per channel (the last dimension).
  torch::Tensor map(const torch::Tensor& x, at::Generator&) const override {
    return (x.to(torch::kFloat) - mean_) / std_;
  }

 private:
  torch::Tensor mean_, std_;
};

torch::ScalarType parse_dtype(const config::Node& o, const std::string& name) {
  static const std::vector<std::pair<std::string, torch::ScalarType>> types = {
      {"float32", torch::kFloat},     {"float64", torch::kDouble}, {"float16", torch::kHalf},
      {"bfloat16", torch::kBFloat16}, {"int64", torch::kLong},     {"int32", torch::kInt},
      {"uint8", torch::kByte},        {"bool", torch::kBool}};
  std::vector<std::string> names;
  for (const auto& [n, t] : types) {
    if (n == name) return t;
    names.push_back(n);
  }
  throw ConfigError(o.where() + ": unknown dtype \"" + name + "\" (known: " + join_names(names) + ")");
}

class Cast : public KeyTransform {
 public:
  explicit Cast(const config::Node& o)
      : KeyTransform(o, "image", /*each=*/true), dtype_(parse_dtype(o, o.get_string("dtype"))) {}
  torch::Tensor map(const torch::Tensor& x, at::Generator&) const override { return x.to(dtype_); }

 private:
  torch::ScalarType dtype_;
};

// `shape` is per example; the batch dimension is kept.
class Reshape : public KeyTransform {
 public:
  explicit Reshape(const config::Node& o)
      : KeyTransform(o, "image", /*each=*/true),
        shape_(o.get_int_list_in("shape", std::nullopt, -1, std::numeric_limits<int64_t>::max())) {
    if (std::count(shape_.begin(), shape_.end(), -1) > 1 || std::count(shape_.begin(), shape_.end(), 0) > 0) {
      throw ConfigError(o.child("shape").where() +
                        ": shape lists each example's sizes (>= 1), with at most one -1 for the size inferred");
    }
  }
  torch::Tensor map(const torch::Tensor& x, at::Generator&) const override {
    std::vector<int64_t> shape{x.size(0)};
    shape.insert(shape.end(), shape_.begin(), shape_.end());
    return x.reshape(shape);
  }

 private:
  std::vector<int64_t> shape_;
};

class OneHot : public KeyTransform {
 public:
  explicit OneHot(const config::Node& o)
      : KeyTransform(o, "label", /*each=*/true),
        classes_(o.get_int_in("num_classes", std::nullopt, 1, int64_t{1} << 24)) {}
  torch::Tensor map(const torch::Tensor& x, at::Generator&) const override {
    return torch::nn::functional::one_hot(x.to(torch::kLong), classes_).to(torch::kFloat);
  }

 private:
  int64_t classes_;
};

// `x` reversed along `dim`: a copy of whole runs of the axes after it (for channels-last images,
// one pixel's channels), several times faster than LibTorch's flip on such small runs.
torch::Tensor flip_along(const torch::Tensor& x, int64_t dim) {
  if (!x.is_contiguous() || !x.device().is_cpu()) return x.flip({dim});
  torch::Tensor out = torch::empty_like(x);
  int64_t outer = 1, inner = static_cast<int64_t>(x.element_size());
  for (int64_t d = 0; d < dim; ++d) outer *= x.size(d);
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  const int64_t n = x.size(dim);
  const auto* src = static_cast<const char*>(x.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t i = 0; i < n; ++i) {
      const char* from = src + (o * n + i) * inner;
      char* to = dst + (o * n + n - 1 - i) * inner;
      if (inner <= 16) {
        for (int64_t b = 0; b < inner; ++b) to[b] = from[b];
      } else {
        std::memcpy(to, from, static_cast<std::size_t>(inner));
      }
    }
  }
  return out;
}

// Flips each image left-right (or up-down with axis: height) with the given probability.
class RandomFlip : public KeyTransform {
 public:
  explicit RandomFlip(const config::Node& o)
      : KeyTransform(o, "image", /*each=*/true), probability_(o.get_double_in("probability", 0.5, 0.0, 1.0)) {
    const std::string axis = o.get_string("axis", "width");
    if (axis != "width" && axis != "height") throw ConfigError(o.where() + ": axis must be \"width\" or \"height\"");
    dim_ = axis == "width" ? 2 : 1;
  }
  // Only the images drawn are flipped (a batch of one, as a random-access source's example, is
  // flipped or returned as it is).
  torch::Tensor map(const torch::Tensor& x, at::Generator& gen) const override {
    return flip_drawn(x, at::rand({x.size(0)}, gen).lt(probability_));
  }
  torch::Tensor map_each(const torch::Tensor& x, std::vector<at::Generator>& generators) const override {
    std::vector<torch::Tensor> draws;
    draws.reserve(generators.size());
    for (at::Generator& g : generators) draws.push_back(at::rand({1}, g));
    return flip_drawn(x, torch::cat(draws).lt(probability_));
  }

 private:
  torch::Tensor flip_drawn(const torch::Tensor& x, const torch::Tensor& flip) const {
    const int64_t count = flip.sum().item<int64_t>();
    if (count == 0) return x;
    if (count == x.size(0)) return flip_along(x, dim_);
    const torch::Tensor rows = flip.nonzero().squeeze(1);
    return x.index_copy(0, rows, flip_along(x.index_select(0, rows), dim_));
  }

  double probability_;
  int64_t dim_;
};

// Pads each image by `padding` zeros on every side, then crops a random `size` window.
class RandomCrop : public KeyTransform {
 public:
  explicit RandomCrop(const config::Node& o)
      : KeyTransform(o, "image", /*each=*/true),
        size_(o.get_int_list_in("size", std::nullopt, 1, 1 << 16)),
        padding_(o.get_int_in("padding", 0, 0, 1 << 16)) {
    if (size_.size() != 2) throw ConfigError(o.where() + ": size must be [height, width]");
  }
  torch::Tensor map(const torch::Tensor& x, at::Generator& gen) const override {
    const torch::Tensor padded = pad(x);
    const torch::Tensor top = at::randint(padded.size(1) - size_[0] + 1, {x.size(0)}, gen);
    const torch::Tensor left = at::randint(padded.size(2) - size_[1] + 1, {x.size(0)}, gen);
    return crop(padded, top.data_ptr<int64_t>(), left.data_ptr<int64_t>());
  }
  torch::Tensor map_each(const torch::Tensor& x, std::vector<at::Generator>& generators) const override {
    const torch::Tensor padded = pad(x);
    std::vector<int64_t> top, left;
    for (at::Generator& g : generators) {  // as map() draws for a batch of one
      top.push_back(at::randint(padded.size(1) - size_[0] + 1, {1}, g).item<int64_t>());
      left.push_back(at::randint(padded.size(2) - size_[1] + 1, {1}, g).item<int64_t>());
    }
    return crop(padded, top.data(), left.data());
  }

 private:
  torch::Tensor pad(const torch::Tensor& x) const {
    torch::Tensor padded = x;
    if (padding_ > 0) {
      // constant_pad_nd pads the last dimensions first: (C,) W, H.
      std::vector<int64_t> pad = x.dim() == 4 ? std::vector<int64_t>{0, 0, padding_, padding_, padding_, padding_}
                                              : std::vector<int64_t>{padding_, padding_, padding_, padding_};
      padded = torch::constant_pad_nd(x, pad, 0);
    }
    if (size_[0] > padded.size(1) || size_[1] > padded.size(2)) {
      throw Error("RandomCrop size [" + std::to_string(size_[0]) + ", " + std::to_string(size_[1]) +
                  "] is larger than the padded image " + describe_tensor(padded));
    }
    return padded;
  }
  torch::Tensor crop(const torch::Tensor& padded, const int64_t* top, const int64_t* left) const {
    std::vector<torch::Tensor> crops;
    crops.reserve(static_cast<std::size_t>(padded.size(0)));
    for (int64_t i = 0; i < padded.size(0); ++i) {
      crops.push_back(padded[i].narrow(0, top[i], size_[0]).narrow(1, left[i], size_[1]));
    }
    return torch::stack(crops);
  }

  std::vector<int64_t> size_;
  int64_t padding_;
};

// Keeps, drops or renames batch fields.
class Elements : public Transform {
 public:
  explicit Elements(const config::Node& o)
      : keep_(o.get_string_list("keep", std::vector<std::string>{})),
        drop_(o.get_string_list("drop", std::vector<std::string>{})) {
    if (auto r = o.find("rename"); r && !r->is_null()) {
      for (const auto& k : r->keys()) rename_.emplace_back(k, r->get_string(k));
    }
    if (!keep_.empty() && !drop_.empty()) throw ConfigError(o.where() + ": give keep or drop, not both");
  }
  bool applies_each() const override { return true; }
  Tree apply(const Tree& batch, at::Generator&) const override {
    auto check = [&](const std::string& k) {
      if (!batch.contains(k))
        throw KeyError("Elements: the batch has no key \"" + k + "\" (it has " + join_names(batch.keys()) + ")");
    };
    Tree out = Tree::dict();
    if (!keep_.empty()) {
      for (const auto& k : keep_) check(k), out.insert(k, batch.at(k));
    } else {
      out = batch;
      for (const auto& k : drop_) check(k), out.erase(k);
    }
    for (const auto& [from, to] : rename_) {
      check(from);
      Tree renamed = Tree::dict();
      for (const auto& [k, v] : out.items()) renamed.insert(k == from ? to : k, v);
      out = renamed;
    }
    return out;
  }

 private:
  std::vector<std::string> keep_, drop_;
  std::vector<std::pair<std::string, std::string>> rename_;
};

}  // namespace

config::Registry<Transform>& transform_registry() {
  return config::Registry<Transform>::built_once("transform", [](config::Registry<Transform>& r) {
    r.add<ValueRange>("ValueRange", "key=image, in_vrange=[0, 255], vrange=[0, 1]");
    r.add<Normalize>("Normalize", "key=image, mean, std (one value or one per channel)");
    r.add<Cast>("Cast", "key=image, dtype");
    r.add<Reshape>("Reshape", "key=image, shape (per example)");
    r.add<OneHot>("OneHot", "key=label, num_classes");
    r.add<RandomFlip>("RandomFlip", "key=image, axis=width|height, probability=0.5");
    r.add<RandomCrop>("RandomCrop", "key=image, size [H, W], padding=0");
    r.add<Elements>("Elements", "keep | drop (lists of keys), rename {old: new}");
    r.add<Resize>("Resize", "key=image, size [H, W], method=bilinear|nearest|bicubic|area, antialias=true");
    r.add<CenterCrop>("CenterCrop", "key=image, size [H, W]");
    r.add<ResizeSmall>("ResizeSmall", "key=image, size (the smaller side), method=bilinear, antialias=true");
    r.add(
        "RandomResizedCrop",
        [](const config::Node& o) {
          return std::make_shared<RandomResizedCrop>(o, std::pair{0.08, 1.0});
        },
        "key=image, size [H, W], scale=[0.08, 1] (share of the area), ratio=[0.75, 1.333] (torchvision's)");
    r.add(
        "InceptionCrop",
        [](const config::Node& o) {
          return std::make_shared<RandomResizedCrop>(o, std::pair{0.05, 1.0});
        },
        "key=image, size [H, W], scale=[0.05, 1], ratio=[0.75, 1.333] (Kauldron's InceptionCrop)");
    r.add<Rearrange>("Rearrange",
                     "key=image, pattern (einops, per example: \"h w c -> c h w\", \"h w c -> (h w c)\"), "
                     "axes_lengths {name: length} for split axes");
  });
}

}  // namespace kd::data
