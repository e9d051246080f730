#include "trainer/checkpoints/export.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <optional>

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

NamedTensors tensors_from_safetensors(const std::string& bytes, const std::string& where) {
  const auto bad = [&](const std::string& why) {
    return CorruptionError(where + " is not a valid safetensors file: " + why);
  };
  if (bytes.size() < 8) throw bad("shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  if (n > bytes.size() - 8 || n > (uint64_t{100} << 20))
    throw bad("its header length " + std::to_string(n) + " does not fit");
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(bytes.substr(8, n));
  } catch (const nlohmann::json::exception&) {
    throw bad("its header is not JSON");
  }
  if (!header.is_object()) throw bad("its header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const char* data = bytes.data() + 8 + n;
  NamedTensors out;
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
      const uint64_t size = d.get<uint64_t>();
      if (size != 0 && numel > (uint64_t{1} << 40) / size) throw fail("its sizes multiply past 2^40");
      numel *= size;
      shape.push_back(static_cast<int64_t>(size));
    }
    const uint64_t begin = json_size(entry["data_offsets"][0], "a data offset");
    const uint64_t end = json_size(entry["data_offsets"][1], "a data offset");
    const uint64_t element = static_cast<uint64_t>(c10::elementSize(*type));
    if (begin > end || end > data_size || end - begin != numel * element) {
      throw fail("its data [" + std::to_string(begin) + ", " + std::to_string(end) + ") does not fit the " +
                 std::to_string(data_size) + " bytes of data or its " + std::to_string(numel) + " elements");
    }
    torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(*type));
    if (numel > 0) std::memcpy(t.data_ptr(), data + begin, static_cast<std::size_t>(end - begin));
    out.emplace_back(name, std::move(t));
  }
  return out;
}

std::string safetensors_bytes(const NamedTensors& tensors, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(c.numel()) * c.element_size();
    header[name] = {{"dtype", safetensors_dtype(c.scalar_type())},
                    {"shape", c.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(c);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);  // little-endian
  out += json;
  out.reserve(out.size() + offset);
  for (const auto& c : data)
    out.append(static_cast<const char*>(c.data_ptr()), static_cast<std::size_t>(c.numel()) * c.element_size());
  return out;
}

std::string torch_pickle_bytes(const NamedTensors& tensors) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& [name, t] : tensors) dict.insert(name, t.detach().to(torch::kCPU).contiguous());
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  return std::string(bytes.begin(), bytes.end());
}

void write_new_file(const std::string& path, const std::string& bytes) {
  // Checked first for a clear message; the creation itself refuses an existing file too (one
  // made meanwhile).
  if (std::filesystem::exists(path)) {
    throw ConfigError("\"" + path + "\" already exists; choose another --out (kd never replaces a file)");
  }
  io::create_file_atomically(*io::posix_file_system(), path, bytes);
}

}  // namespace kd::checkpoints
