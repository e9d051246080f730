// Trees exchanged between ranks (distributed.h): tree_to_bytes, tree_from_bytes,
// all_gather_trees.
#include <cstring>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/common/error.h"
#include "trainer/distributed/distributed.h"
#include "trainer/tree/tree_json.h"

namespace kd::distributed {

using json = nlohmann::ordered_json;

// Layout: [u64 length of the msgpack skeleton][skeleton][the tensors' bytes, in order]; a
// tensor's skeleton entry is [dtype, shape].
std::string tree_to_bytes(const Tree& tree) {
  std::vector<torch::Tensor> tensors;
  const json skeleton = tree_to_json(tree, [&](const torch::Tensor& t) {
    tensors.push_back(t.detach().cpu().contiguous());
    return json::array({static_cast<int>(t.scalar_type()), t.sizes().vec()});
  });
  const std::vector<std::uint8_t> header = json::to_msgpack(skeleton);
  std::size_t total = sizeof(std::uint64_t) + header.size();
  for (const auto& t : tensors) total += static_cast<std::size_t>(t.numel()) * t.element_size();
  std::string out;
  out.reserve(total);
  const std::uint64_t n = header.size();
  out.append(reinterpret_cast<const char*>(&n), sizeof(n));
  out.append(reinterpret_cast<const char*>(header.data()), header.size());
  for (const auto& t : tensors) {
    out.append(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(t.numel()) * t.element_size());
  }
  return out;
}

Tree tree_from_bytes(const std::string& bytes) {
  std::uint64_t n = 0;
  if (bytes.size() < sizeof(n)) throw CorruptionError("a state received from another rank is truncated");
  std::memcpy(&n, bytes.data(), sizeof(n));
  if (bytes.size() - sizeof(n) < n) throw CorruptionError("a state received from another rank is truncated");
  const json skeleton =
      json::from_msgpack(bytes.begin() + sizeof(n), bytes.begin() + static_cast<std::ptrdiff_t>(sizeof(n) + n));
  const char* data = bytes.data() + sizeof(n) + n;
  const char* end = bytes.data() + bytes.size();
  return tree_from_json(skeleton, [&](const json& entry) {
    torch::Tensor t = torch::empty(entry[1].get<std::vector<int64_t>>(),
                                   torch::TensorOptions().dtype(static_cast<c10::ScalarType>(entry[0].get<int>())));
    const auto size = static_cast<std::size_t>(t.numel()) * t.element_size();
    if (static_cast<std::size_t>(end - data) < size)
      throw CorruptionError("a state received from another rank is truncated");
    std::memcpy(t.data_ptr(), data, size);
    data += size;
    return t;
  });
}

std::vector<Tree> all_gather_trees(ProcessGroup& group, const Tree& tree, const std::string& what) {
  std::vector<Tree> out;
  for (const auto& bytes : group.all_gather_bytes(tree_to_bytes(tree), what)) out.push_back(tree_from_bytes(bytes));
  return out;
}

}  // namespace kd::distributed
