#include "trainer/data/idx.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "trainer/common/error.h"

namespace kd::data {

torch::Tensor read_idx(const std::string& path) {
  // gzread reads plain files too, so one code path serves both.
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw IOError("cannot open the dataset file \"" + path + "\": " + std::strerror(errno) +
                  ". Install the dataset (scripts/setup installs dataset-fashion-mnist) or set `path`.");
  }
  std::vector<unsigned char> bytes;
  unsigned char buffer[1 << 16];
  int n;
  // A bound on what is decompressed: a small crafted .gz can expand without end.
  constexpr std::size_t kMaxBytes = std::size_t{4} << 30;
  try {
    while ((n = gzread(file, buffer, sizeof(buffer))) > 0) {
      bytes.insert(bytes.end(), buffer, buffer + n);
      if (bytes.size() > kMaxBytes) {
        gzclose(file);
        throw CorruptionError("\"" + path + "\" decompresses to more than 4 GiB; not an IDX dataset file");
      }
    }
  } catch (const std::bad_alloc&) {
    gzclose(file);
    throw CorruptionError("\"" + path + "\" does not fit in memory once decompressed");
  }
  int gz_error = 0;
  const char* gz_message = gzerror(file, &gz_error);
  const std::string message = gz_message ? gz_message : "";
  gzclose(file);
  if (n < 0 || (gz_error != Z_OK && gz_error != Z_STREAM_END)) {
    throw CorruptionError("\"" + path + "\" could not be decompressed: " + message);
  }
  auto corrupt = [&](const std::string& why) {
    return CorruptionError("\"" + path + "\" is not a valid IDX file: " + why);
  };
  if (bytes.size() < 4 || bytes[0] != 0 || bytes[1] != 0) throw corrupt("bad magic number");
  const int type = bytes[2];
  const int dims = bytes[3];
  if (type != 0x08)
    throw corrupt("only unsigned-byte data (type 0x08) is supported, found type " + std::to_string(type));
  if (bytes.size() < 4 + 4 * static_cast<std::size_t>(dims)) throw corrupt("truncated header");
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    const unsigned char* p = &bytes[4 + 4 * d];
    const int64_t size = (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]};
    shape.push_back(size);
    if (size != 0 && count > static_cast<int64_t>(kMaxBytes) / size)
      throw corrupt("the header's sizes multiply past 4 GiB");
    count *= size;
  }
  const std::size_t offset = 4 + 4 * static_cast<std::size_t>(dims);
  if (bytes.size() - offset != static_cast<std::size_t>(count)) {
    throw corrupt("the header promises " + std::to_string(count) + " values but the file holds " +
                  std::to_string(bytes.size() - offset) + " (truncated download?)");
  }
  torch::Tensor out = torch::empty(shape, torch::kUInt8);
  if (count > 0) std::memcpy(out.data_ptr(), bytes.data() + offset, static_cast<std::size_t>(count));
  return out;
}

}  // namespace kd::data
