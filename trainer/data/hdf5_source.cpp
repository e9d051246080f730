// The Hdf5 source (hdf5_source_internal.h), on Debian's libhdf5 (1.10, built thread-safe).
#include "trainer/data/hdf5_source_internal.h"

#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/tensor_text.h"
#include "trainer/data/array_files_internal.h"

namespace kd::data {
namespace {

static_assert(sizeof(hid_t) == sizeof(int64_t), "hid_t is kept as int64_t outside this file");

// Debian's libhdf5 is built thread-safe (it serialises its calls itself); a build that is not
// gets kd's lock around every call.
std::unique_lock<std::mutex> hdf5_lock() {
  static std::mutex mutex;
  static const bool thread_safe = [] {
    hbool_t safe = 0;
    return H5is_library_threadsafe(&safe) >= 0 && safe > 0;
  }();
  return thread_safe ? std::unique_lock<std::mutex>() : std::unique_lock<std::mutex>(mutex);
}

// HDF5 prints its error stack to stderr unless told not to, per thread; kd reports errors itself.
void hdf5_quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// The innermost message of HDF5's error stack for this thread ("unable to open file: ..."),
// then the stack cleared.
std::string hdf5_message() {
  std::string message;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        if (e->desc != nullptr && e->desc[0] != '\0') *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &message);
  H5Eclear2(H5E_DEFAULT);
  return message.empty() ? "HDF5 gave no reason" : message;
}

// An identifier HDF5 returned, closed by `close` when this goes.
class H5Handle {
 public:
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5Handle() {
    if (id_ >= 0) close_(id_);
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  hid_t get() const { return id_; }
  hid_t release() { return std::exchange(id_, -1); }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

std::string dataset_text(const std::string& file, const std::string& dataset) {
  return "\"" + file + "\" dataset \"" + dataset + "\"";
}

// The torch dtype and HDF5 memory type a dataset of `file_type` is read as; a CorruptionError
// for types kd does not read.
std::pair<torch::ScalarType, hid_t> h5_read_type(hid_t file_type, const std::string& what) {
  const H5T_class_t type_class = H5Tget_class(file_type);
  const std::size_t size = H5Tget_size(file_type);
  if (type_class == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(file_type) == H5T_SGN_2;
    switch (size) {
      case 1:
        return is_signed ? std::pair{torch::kChar, H5Tcopy(H5T_NATIVE_INT8)}
                         : std::pair{torch::kByte, H5Tcopy(H5T_NATIVE_UINT8)};
      case 2:
        return is_signed ? std::pair{torch::kShort, H5Tcopy(H5T_NATIVE_INT16)}
                         : std::pair{torch::kInt, H5Tcopy(H5T_NATIVE_INT32)};
      case 4:
        return is_signed ? std::pair{torch::kInt, H5Tcopy(H5T_NATIVE_INT32)}
                         : std::pair{torch::kLong, H5Tcopy(H5T_NATIVE_INT64)};
      case 8:
        if (is_signed) return {torch::kLong, H5Tcopy(H5T_NATIVE_INT64)};
        throw CorruptionError(what + " holds uint64, which LibTorch has no type for; store it as int64");
      default:
        break;
    }
  } else if (type_class == H5T_FLOAT) {
    if (size == 4) return {torch::kFloat, H5Tcopy(H5T_NATIVE_FLOAT)};
    if (size == 8) return {torch::kDouble, H5Tcopy(H5T_NATIVE_DOUBLE)};
    if (size == 2 && H5Tget_ebias(file_type) == 15) {  // IEEE half (h5py's float16), read little-endian
      const hid_t half = H5Tcopy(file_type);
      H5Tset_order(half, H5T_ORDER_LE);
      return {torch::kHalf, half};
    }
  } else if (type_class == H5T_ENUM && size == 1 && H5Tget_nmembers(file_type) == 2) {  // h5py's bool
    int8_t values[2] = {-1, -1};
    H5Tget_member_value(file_type, 0, &values[0]);
    H5Tget_member_value(file_type, 1, &values[1]);
    if (std::min(values[0], values[1]) == 0 && std::max(values[0], values[1]) == 1) {
      return {torch::kBool, H5Tcopy(file_type)};
    }
  }
  static const std::pair<H5T_class_t, const char*> kClassNames[] = {
      {H5T_INTEGER, "integer"},     {H5T_FLOAT, "float"},   {H5T_STRING, "string"},
      {H5T_BITFIELD, "bitfield"},   {H5T_OPAQUE, "opaque"}, {H5T_COMPOUND, "compound"},
      {H5T_REFERENCE, "reference"}, {H5T_ENUM, "enum"},     {H5T_VLEN, "variable-length"},
      {H5T_ARRAY, "array"}};
  std::string name = "unknown";
  for (const auto& [c, n] : kClassNames) {
    if (c == type_class) name = n;
  }
  throw CorruptionError(what + " holds " + std::to_string(size) + "-byte " + name +
                        " values; kd reads integer (8-64 bits), float (16, 32, 64 bits) and bool datasets");
}

Hdf5Source::Dataset open_h5_dataset(hid_t file, const std::string& file_name, const std::string& name,
                                    const std::shared_ptr<const io::RandomAccessFile>& raw, std::size_t chunk_cache) {
  const std::string what = dataset_text(file_name, name);
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw CorruptionError(what + " does not exist (h5ls -r \"" + file_name + "\" lists the datasets it holds)");
  }
  const H5Handle access(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  // Chunks decompressed once stay cached for the neighbours read next.
  H5Pset_chunk_cache(access.get(), H5D_CHUNK_CACHE_NSLOTS_DEFAULT, chunk_cache, H5D_CHUNK_CACHE_W0_DEFAULT);
  H5Handle dataset(H5Dopen2(file, name.c_str(), access.get()), H5Dclose);
  if (dataset.get() < 0) throw CorruptionError(what + " cannot be opened as a dataset: " + hdf5_message());
  Hdf5Source::Dataset out;
  out.file_name = file_name;
  out.name = name;
  const H5Handle space(H5Dget_space(dataset.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 1) throw CorruptionError(what + " is a scalar (or empty), not an array of examples");
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  for (const hsize_t d : dims) out.shape.push_back(static_cast<int64_t>(d));
  const H5Handle file_type(H5Dget_type(dataset.get()), H5Tclose);
  auto [dtype, memory_type] = h5_read_type(file_type.get(), what);
  H5Handle memory(memory_type, H5Tclose);
  out.dtype = dtype;
  out.example_bytes = H5Tget_size(memory.get());
  for (int d = 1; d < rank; ++d) out.example_bytes *= static_cast<std::size_t>(dims[static_cast<std::size_t>(d)]);

  // Read directly when the file holds the examples contiguously, exactly as they are read.
  const H5Handle create(H5Dget_create_plist(dataset.get()), H5Pclose);
  const haddr_t offset = H5Dget_offset(dataset.get());
  H5Eclear2(H5E_DEFAULT);  // HADDR_UNDEF for chunked or unwritten data pushes an error
  // (Storage never written holds no examples to read, only fill values: libhdf5 gives those.)
  if (H5Pget_layout(create.get()) == H5D_CONTIGUOUS && H5Pget_nfilters(create.get()) == 0 &&
      H5Pget_external_count(create.get()) == 0 && offset != HADDR_UNDEF &&
      H5Dget_storage_size(dataset.get()) == out.example_bytes * dims[0] &&
      H5Tequal(file_type.get(), memory.get()) > 0) {
    const std::size_t end = static_cast<std::size_t>(offset) + out.example_bytes * dims[0];
    if (end > raw->size()) {
      throw CorruptionError(what + " ends at byte " + std::to_string(end) + " but the file holds " +
                            std::to_string(raw->size()) + ": the file is cut short");
    }
    out.direct = raw;
    out.offset = static_cast<std::size_t>(offset);
  }
  if (H5Pget_layout(create.get()) == H5D_CHUNKED && H5Pget_nfilters(create.get()) > 0) {
    std::vector<hsize_t> chunk(static_cast<std::size_t>(rank));
    H5Pget_chunk(create.get(), rank, chunk.data());
    out.compressed_chunk = static_cast<int64_t>(chunk[0]);
  }
  out.dataset = dataset.release();
  out.memory_type = memory.release();
  return out;
}

void close_h5_dataset(const Hdf5Source::Dataset& d) {
  if (d.memory_type >= 0) H5Tclose(d.memory_type);
  if (d.dataset >= 0) H5Dclose(d.dataset);
}

}  // namespace

Hdf5Source::Hdf5Source(const config::Node& o) : pattern_(o.get_string("path")) {
  const config::Node fields = o.child("fields");
  const std::string where = fields.where();
  if (!fields.is_map() || fields.keys().empty()) {
    throw ConfigError(where +
                      ": fields maps each batch key to a dataset of the file, e.g. {image: /train/images, "
                      "label: /train/labels}");
  }
  try {
    const auto lock = hdf5_lock();  // released before the handler below closes what was opened
    hdf5_quiet();
    const std::vector<std::string> file_names = expand_files("", pattern_, o.child("path").where());
    // The chunk caches of all datasets together hold at most 64 MiB (each at least libhdf5's 1 MiB).
    const std::size_t chunk_cache = std::max<std::size_t>(
        std::size_t{1} << 20, (std::size_t{64} << 20) / (file_names.size() * fields.keys().size()));
    for (const std::string& file_name : file_names) {
      const auto raw = io::RandomAccessFile::open(file_name);  // IOError naming a missing file
      if (H5Fis_hdf5(file_name.c_str()) <= 0) {
        H5Eclear2(H5E_DEFAULT);
        throw CorruptionError("\"" + file_name + "\" is not an HDF5 file (no HDF5 signature)");
      }
      const hid_t file = H5Fopen(file_name.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
      if (file < 0) throw CorruptionError("\"" + file_name + "\" cannot be opened by HDF5: " + hdf5_message());
      files_.push_back(file);
      std::vector<Dataset>& shard = shards_.emplace_back();
      for (const std::string& key : fields.keys()) {
        shard.push_back(open_h5_dataset(file, file_name, fields.get_string(key), raw, chunk_cache));
      }
    }
    field_names_ = fields.keys();
    check_shards();
  } catch (...) {
    close_all();  // the destructor does not run when the constructor throws
    throw;
  }
}

void Hdf5Source::check_shards() {
  shard_starts_.push_back(0);
  for (const std::vector<Dataset>& shard : shards_) {
    const Dataset& first = shard.front();
    for (const Dataset& d : shard) {
      if (d.shape[0] != first.shape[0]) {
        throw CorruptionError(dataset_text(d.file_name, d.name) + " holds " + std::to_string(d.shape[0]) +
                              " examples, " + dataset_text(first.file_name, first.name) + " " +
                              std::to_string(first.shape[0]) + ": the fields need one example each");
      }
    }
    for (std::size_t f = 0; f < shard.size(); ++f) {
      const Dataset& d = shard[f];
      const Dataset& model = shards_.front()[f];
      if (!std::equal(d.shape.begin() + 1, d.shape.end(), model.shape.begin() + 1, model.shape.end()) ||
          d.dtype != model.dtype) {
        throw CorruptionError(dataset_text(d.file_name, d.name) + " has examples of " + dtype_name(d.dtype) +
                              shape_text(std::vector<int64_t>(d.shape.begin() + 1, d.shape.end())) + ", " +
                              dataset_text(model.file_name, model.name) + " " + dtype_name(model.dtype) +
                              shape_text(std::vector<int64_t>(model.shape.begin() + 1, model.shape.end())) +
                              ": the shards of a field need one dtype and example shape");
      }
    }
    shard_starts_.push_back(shard_starts_.back() + first.shape[0]);
  }
  size_ = shard_starts_.back();
}

Hdf5Source::~Hdf5Source() { close_all(); }

void Hdf5Source::close_all() {
  const auto lock = hdf5_lock();
  for (const std::vector<Dataset>& shard : shards_) {
    for (const Dataset& d : shard) close_h5_dataset(d);
  }
  for (const int64_t file : files_) H5Fclose(file);
  shards_.clear();
  files_.clear();
}

std::size_t Hdf5Source::shard_of(int64_t index) const {
  return static_cast<std::size_t>(std::upper_bound(shard_starts_.begin(), shard_starts_.end(), index) -
                                  shard_starts_.begin() - 1);
}

Tree Hdf5Source::get(int64_t index) const {
  const std::size_t s = shard_of(index);
  const auto i = static_cast<hsize_t>(index - shard_starts_[s]);
  Tree out = Tree::dict();
  for (std::size_t f = 0; f < field_names_.size(); ++f) {
    const Dataset& d = shards_[s][f];
    torch::Tensor example =
        torch::empty(std::vector<int64_t>(d.shape.begin() + 1, d.shape.end()), torch::TensorOptions().dtype(d.dtype));
    if (d.direct) {
      d.direct->read(d.offset + i * d.example_bytes, d.example_bytes, example.data_ptr());
    } else {
      const auto lock = hdf5_lock();  // before the handles, which close under it
      hdf5_quiet();
      const H5Handle file_space(H5Dget_space(d.dataset), H5Sclose);
      std::vector<hsize_t> start(d.shape.size(), 0), count(d.shape.begin(), d.shape.end());
      start[0] = i;
      count[0] = 1;
      const std::vector<hsize_t> example_dims(count.begin() + 1, count.end());
      const H5Handle memory_space(
          example_dims.empty() ? H5Screate(H5S_SCALAR)
                               : H5Screate_simple(static_cast<int>(example_dims.size()), example_dims.data(), nullptr),
          H5Sclose);
      if (H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
          H5Dread(d.dataset, d.memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, example.data_ptr()) <
              0) {
        throw CorruptionError(dataset_text(d.file_name, d.name) + ": example " + std::to_string(i) +
                              " cannot be read: " + hdf5_message());
      }
    }
    out.insert(field_names_[f], std::move(example));
  }
  return out;
}

std::string Hdf5Source::name_of(int64_t index) const {
  const std::size_t s = shard_of(index);
  return "\"" + shards_[s].front().file_name + "\" example " + std::to_string(index - shard_starts_[s]);
}

std::vector<std::string> Hdf5Source::warnings() const {
  std::vector<std::string> out;
  for (const Dataset& d : shards_.front()) {
    if (d.compressed_chunk > 1) {
      out.push_back(dataset_text(d.file_name, d.name) + " is compressed in chunks of " +
                    std::to_string(d.compressed_chunk) +
                    " examples: each example read in a shuffled order decompresses its whole chunk. Rewrite it "
                    "with chunks=(1, ...) or uncompressed (h5py: f.create_dataset(name, data=x)) to read faster");
    }
  }
  return out;
}

std::string Hdf5Source::describe() const {
  std::string out = "Hdf5 " + pattern_ + " {";
  const std::vector<Dataset>& first = shards_.front();
  for (std::size_t f = 0; f < first.size(); ++f) {
    out += (f ? ", " : "") + field_names_[f] + ": " + first[f].name + " " + dtype_name(first[f].dtype) +
           shape_text(std::vector<int64_t>(first[f].shape.begin() + 1, first[f].shape.end())) +
           (first[f].direct ? "" : " via HDF5");
  }
  out += "}";
  if (shards_.size() > 1) out += " in " + std::to_string(shards_.size()) + " files";
  return out;
}

}  // namespace kd::data
