#include "trainer/common/tensor_text.h"

#include <string>

#include <torch/types.h>

namespace kd {

const char* dtype_name(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return "float32";
    case torch::kDouble:
      return "float64";
    case torch::kHalf:
      return "float16";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kLong:
      return "int64";
    case torch::kInt:
      return "int32";
    case torch::kShort:
      return "int16";
    case torch::kChar:
      return "int8";
    case torch::kByte:
      return "uint8";
    case torch::kBool:
      return "bool";
    default:
      return c10::toString(type);
  }
}

std::string describe_tensor(const torch::Tensor& tensor) {
  if (!tensor.defined()) return "undefined tensor";
  std::string out = dtype_name(tensor.scalar_type());
  out += "[";
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    if (d) out += ", ";
    out += std::to_string(tensor.size(d));
  }
  out += "]";
  if (!tensor.device().is_cpu()) out += " on " + tensor.device().str();
  return out;
}

}  // namespace kd
