#include "trainer/context/auxiliary.h"

#include "trainer/common/error.h"
#include "trainer/context/context.h"
#include "trainer/context/error_context.h"

namespace kd::train {

Path Auxiliary::key(const config::Node& options, const std::string& name, const std::string& default_path) {
  std::string text = default_path;
  if (auto node = options.find(name); node && !node->is_null()) {
    text = node->as_string();
  } else if (default_path.empty()) {
    throw ConfigError(options.where() + ": missing the key \"" + name +
                      "\": the path in the context to read it from (e.g. \"batch." + name + "\")");
  }
  Path path;
  try {
    path = Path::parse(text);
  } catch (Error& e) {
    e.add_context(options.where() + ": key \"" + name + "\"");
    throw;
  }
  keys_.emplace_back(name, path);
  return path;
}

std::optional<Path> Auxiliary::optional_key(const config::Node& options, const std::string& name) {
  auto node = options.find(name);
  if (!node || node->is_null()) return std::nullopt;
  return key(options, name);
}

torch::Tensor Auxiliary::read(const Context& ctx, const Path& path) {
  const Tree value = ctx.get(path);
  if (!value.is_tensor()) {
    throw TypeError("\"" + path.str() + "\" must be a tensor, but the context holds " + value.describe());
  }
  return value.tensor();
}

torch::Tensor Auxiliary::read_mask(const Context& ctx, const Path& path, const torch::Tensor& like) {
  const torch::Tensor given = read(ctx, path);
  torch::Tensor mask = given.to(like.is_floating_point() ? like.scalar_type() : torch::kFloat);
  while (mask.dim() > like.dim() && mask.size(-1) == 1) mask = mask.squeeze(-1);
  while (mask.dim() < like.dim()) mask = mask.unsqueeze(-1);
  bool fits = mask.dim() == like.dim();
  for (int64_t d = 0; fits && d < mask.dim(); ++d) fits = mask.size(d) == like.size(d) || mask.size(d) == 1;
  if (!fits) {
    throw TypeError("the mask \"" + path.str() + "\" is " + describe_tensor(given) + ", which does not fit values " +
                    describe_tensor(like) + ": give one value per example ([B] or [B, 1]) or per element");
  }
  return mask.expand_as(like);
}

void Auxiliary::check_class_indices(const torch::Tensor& labels, int64_t classes, std::optional<int64_t> ignore,
                                    const Path& path) {
  if (!labels.device().is_cpu() || labels.numel() == 0) return;
  // A plain scan where it can be (every step reads the labels: tensor operations would cost more
  // than a small model's step does).
  if (labels.is_contiguous() && labels.scalar_type() == torch::kLong) {
    const int64_t* v = labels.data_ptr<int64_t>();
    bool fine = true;
    for (int64_t i = 0; i < labels.numel(); ++i) {
      fine &= (v[i] >= 0 && v[i] < classes) || (ignore && v[i] == *ignore);
    }
    if (fine) return;
  }
  torch::Tensor outside = labels.lt(0).logical_or_(labels.ge(classes));
  if (ignore) outside.logical_and_(labels.ne(*ignore));
  if (!outside.any().item<bool>()) return;
  const int64_t first = outside.reshape({-1}).nonzero()[0].item<int64_t>();
  const int64_t value = labels.reshape({-1})[first].item<int64_t>();
  const int64_t count = outside.sum().item<int64_t>();
  std::string message = "\"" + path.str() + "\" holds the class index " + std::to_string(value) + " (element " +
                        std::to_string(first) + (count > 1 ? ", and " + std::to_string(count - 1) + " more" : "") +
                        "), outside [0, " + std::to_string(classes) + ") of the logits' last axis";
  if (ignore) {
    message += " and not ignore_index " + std::to_string(*ignore);
  } else {
    message += value == -100 ? "; PyTorch's cross-entropy skips -100 silently, kd does not: set ignore_index: -100 "
                               "on this loss or metric to leave such labels out"
                             : "; fix the data or the model's number of outputs (or set ignore_index to leave a "
                               "label value out)";
  }
  throw TypeError(message);
}

namespace detail {

std::string describe_inputs(const Auxiliary& aux, const Context& ctx) {
  std::string out;
  for (const auto& [name, path] : aux.keys()) {
    std::string what;
    try {
      what = ctx.get(path).describe();
    } catch (const Error&) {
      what = "(missing)";
    }
    out += (out.empty() ? "" : ", ") + path.str() + " " + what;
  }
  return out.empty() ? out : " (inputs: " + out + ")";
}

}  // namespace detail
}  // namespace kd::train
