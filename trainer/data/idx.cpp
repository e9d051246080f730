#include "trainer/data/idx.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "trainer/common/error.h"

namespace kd::data {

torch::Tensor read_idx(const std::string& path) {
  // gzread reads plain files too, so one code path serves both. The values are decompressed
  // straight into the tensor (no buffer of the whole file).
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    throw IOError("cannot open the dataset file \"" + path + "\": " + std::strerror(errno) +
                  ". Install the dataset (scripts/setup installs dataset-fashion-mnist) or set `path`.");
  }
  struct Closer {
    gzFile file;
    ~Closer() { gzclose(file); }
  } closer{file};
  auto corrupt = [&](const std::string& why) {
    return CorruptionError("\"" + path + "\" is not a valid IDX file: " + why);
  };
  // Up to `size` bytes (fewer at the end of the file); a decompression error is reported.
  auto read = [&](void* into, std::size_t size) {
    std::size_t done = 0;
    while (done < size) {
      const unsigned chunk = static_cast<unsigned>(std::min<std::size_t>(size - done, std::size_t{1} << 30));
      const int n = gzread(file, static_cast<char*>(into) + done, chunk);
      if (n < 0) {
        int gz_error = 0;
        const char* message = gzerror(file, &gz_error);
        throw CorruptionError("\"" + path + "\" could not be decompressed: " + (message ? message : ""));
      }
      if (n == 0) break;
      done += static_cast<std::size_t>(n);
    }
    return done;
  };
  // A bound on what is decompressed: a small crafted .gz can expand without end.
  constexpr int64_t kMaxBytes = int64_t{4} << 30;
  unsigned char magic[4];
  if (read(magic, 4) < 4 || magic[0] != 0 || magic[1] != 0) throw corrupt("bad magic number");
  const int type = magic[2];
  const int dims = magic[3];
  if (type != 0x08)
    throw corrupt("only unsigned-byte data (type 0x08) is supported, found type " + std::to_string(type));
  std::vector<unsigned char> header(4 * static_cast<std::size_t>(dims));
  if (read(header.data(), header.size()) < header.size()) throw corrupt("truncated header");
  std::vector<int64_t> shape;
  int64_t count = 1;
  for (int d = 0; d < dims; ++d) {
    const unsigned char* p = &header[4 * static_cast<std::size_t>(d)];
    const int64_t size = (int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]};
    shape.push_back(size);
    if (size != 0 && count > kMaxBytes / size) throw corrupt("the header's sizes multiply past 4 GiB");
    count *= size;
  }
  // Into a tensor that grows as values arrive (from at most 64 MiB, doubling), so that a header
  // promising more than the file holds costs no more memory than the file's values.
  int64_t capacity = std::min<int64_t>(count, int64_t{64} << 20);
  torch::Tensor flat;
  int64_t got = 0;
  try {
    flat = torch::empty({capacity}, torch::kUInt8);
    while (true) {
      got += static_cast<int64_t>(
          read(static_cast<unsigned char*>(flat.data_ptr()) + got, static_cast<std::size_t>(capacity - got)));
      if (got < capacity || capacity == count) break;
      capacity = std::min(count, capacity * 2);
      torch::Tensor bigger = torch::empty({capacity}, torch::kUInt8);
      std::memcpy(bigger.data_ptr(), flat.data_ptr(), static_cast<std::size_t>(got));
      flat = std::move(bigger);
    }
  } catch (const c10::Error&) {
    throw CorruptionError("\"" + path + "\" promises " + std::to_string(count) + " values, which do not fit in memory");
  }
  unsigned char extra;
  const bool more = read(&extra, 1) != 0;
  if (got != count || more) {
    throw corrupt("the header promises " + std::to_string(count) + " values but the file holds " +
                  (more ? "more" : std::to_string(got) + " (truncated download?)"));
  }
  torch::Tensor out = flat.view(shape);
  return out;
}

}  // namespace kd::data
