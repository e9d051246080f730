#include "trainer/checkpoints/safetensors.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <tuple>
#include <vector>

#include <torch/serialize.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/common/error.h"
#include "trainer/io/file_system.h"
#include "trainer/tree/tree_json.h"

namespace kd::checkpoints {
namespace {

const char* safetensors_dtype(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return "F32";
    case torch::kDouble:
      return "F64";
    case torch::kHalf:
      return "F16";
    case torch::kBFloat16:
      return "BF16";
    case torch::kLong:
      return "I64";
    case torch::kInt:
      return "I32";
    case torch::kShort:
      return "I16";
    case torch::kChar:
      return "I8";
    case torch::kByte:
      return "U8";
    case torch::kBool:
      return "BOOL";
    default:
      throw NotSupportedError(std::string("safetensors has no dtype for ") + c10::toString(type));
  }
}

std::optional<torch::ScalarType> dtype_of(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> types = {
      {"F32", torch::kFloat}, {"F64", torch::kDouble}, {"F16", torch::kHalf},  {"BF16", torch::kBFloat16},
      {"I64", torch::kLong},  {"I32", torch::kInt},    {"I16", torch::kShort}, {"I8", torch::kChar},
      {"U8", torch::kByte},   {"BOOL", torch::kBool}};
  const auto it = types.find(name);
  return it == types.end() ? std::nullopt : std::optional<torch::ScalarType>(it->second);
}

}  // namespace

namespace {

// Checks and reads the file's bytes [data, data + size); `make(type, shape, offset, bytes)`
// returns the tensor whose bytes start at `offset`.
using MakeTensor = std::function<torch::Tensor(torch::ScalarType type, const std::vector<int64_t>& shape,
                                               uint64_t offset, uint64_t bytes)>;

NamedTensors parse_safetensors(const char* bytes, uint64_t size, const std::string& where, const MakeTensor& make) {
  const auto bad = [&](const std::string& why) {
    return CorruptionError(where + " is not a valid safetensors file: " + why);
  };
  if (size < 8) throw bad("shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  if (n > size - 8 || n > (uint64_t{100} << 20)) throw bad("its header length " + std::to_string(n) + " does not fit");
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(std::string_view(bytes + 8, n));
  } catch (const nlohmann::json::exception&) {
    throw bad("its header is not JSON");
  }
  if (!header.is_object()) throw bad("its header is not a JSON object");
  const uint64_t data_size = size - 8 - n;
  NamedTensors out;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> ranges;  // [begin, end) and the tensor
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const auto fail = [&](const std::string& why) { return bad("tensor \"" + name + "\": " + why); };
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() || !entry.contains("shape") ||
        !entry["shape"].is_array() || !entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2 || !entry["data_offsets"][0].is_number_unsigned() ||
        !entry["data_offsets"][1].is_number_unsigned()) {
      throw fail("not {dtype, shape, data_offsets}");
    }
    const auto type = dtype_of(entry["dtype"].get<std::string>());
    if (!type) throw fail("unknown dtype " + entry["dtype"].dump());
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) throw fail("a dimension is not a size");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > (uint64_t{1} << 40) / dim) throw fail("its sizes multiply past 2^40");
      numel *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t begin = json_size(entry["data_offsets"][0], "a data offset");
    const uint64_t end = json_size(entry["data_offsets"][1], "a data offset");
    const uint64_t element = static_cast<uint64_t>(c10::elementSize(*type));
    if (begin > end || end > data_size || end - begin != numel * element) {
      throw fail("its data [" + std::to_string(begin) + ", " + std::to_string(end) + ") does not fit the " +
                 std::to_string(data_size) + " bytes of data or its " + std::to_string(numel) + " elements");
    }
    ranges.emplace_back(begin, end, name);
    out.emplace_back(name, make(*type, shape, 8 + n + begin, end - begin));
  }
  // The format's own rule: the tensors cover the data exactly, without overlaps or gaps (no
  // bytes that no tensor owns, no two tensors sharing bytes).
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [begin, end, name] : ranges) {
    if (begin != covered) {
      throw bad("tensor \"" + name + "\" starts at byte " + std::to_string(begin) + " of the data, where " +
                std::to_string(covered) + " was expected: " + (begin < covered ? "it overlaps another" : "a gap") +
                " (the tensors must cover the data exactly)");
    }
    covered = end;
  }
  if (covered != data_size) {
    throw bad(std::to_string(data_size - covered) +
              " bytes of data after the last tensor (the tensors must cover "
              "the data exactly)");
  }
  return out;
}

torch::Tensor copy_of(const char* data, torch::ScalarType type, const std::vector<int64_t>& shape, uint64_t bytes) {
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(type));
  if (bytes > 0) std::memcpy(t.data_ptr(), data, static_cast<std::size_t>(bytes));
  return t;
}

}  // namespace

NamedTensors tensors_from_safetensors(const std::string& bytes, const std::string& where) {
  return parse_safetensors(bytes.data(), bytes.size(), where,
                           [&](torch::ScalarType type, const std::vector<int64_t>& shape, uint64_t offset,
                               uint64_t size) { return copy_of(bytes.data() + offset, type, shape, size); });
}

NamedTensors tensors_from_safetensors(const torch::Tensor& bytes, const std::string& where) {
  TORCH_CHECK(bytes.scalar_type() == torch::kByte && bytes.dim() == 1 && bytes.is_contiguous() && bytes.is_cpu(),
              "tensors_from_safetensors: the bytes must be a contiguous uint8 CPU tensor");
  const char* data = static_cast<const char*>(bytes.data_ptr());
  return parse_safetensors(
      data, static_cast<uint64_t>(bytes.numel()), where,
      [&](torch::ScalarType type, const std::vector<int64_t>& shape, uint64_t offset, uint64_t size) {
        const auto element = static_cast<uint64_t>(c10::elementSize(type));
        const auto address = reinterpret_cast<std::uintptr_t>(data + offset);
        if (size == 0 || address % element != 0) return copy_of(data + offset, type, shape, size);
        return bytes.narrow(0, static_cast<int64_t>(offset), static_cast<int64_t>(size)).view(type).view(shape);
      });
}

SafetensorsParts safetensors_parts(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  SafetensorsParts out;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", safetensors_dtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    out.data.push_back(std::move(c));
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  out.header.assign(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    out.header[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);  // little-endian
  out.header += json;
  return out;
}

std::vector<std::string_view> SafetensorsParts::views() const {
  std::vector<std::string_view> out{header};
  for (const auto& c : data) {
    out.emplace_back(static_cast<const char*>(c.data_ptr()), static_cast<std::size_t>(c.numel()) * c.element_size());
  }
  return out;
}

std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  const SafetensorsParts parts = safetensors_parts(tensors, metadata);
  std::string out;
  std::size_t size = 0;
  for (const auto& v : parts.views()) size += v.size();
  out.reserve(size);
  for (const auto& v : parts.views()) out += v;
  return out;
}

}  // namespace kd::checkpoints
