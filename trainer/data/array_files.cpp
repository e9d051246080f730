// The Npy and TokenFile sources (array_files_internal.h).
#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/tensor_text.h"
#include "trainer/data/array_files_internal.h"
#include "trainer/data/csv_source_internal.h"

namespace kd::data {
namespace {

struct Stored {
  const char* descr;  // NumPy's, without the byte-order character
  torch::ScalarType stored, read;
  std::size_t size;
};
// uint16 and uint32 are stored as the signed type of their size and widened when read.
constexpr Stored kStoredTypes[] = {{"b1", torch::kBool, torch::kBool, 1},     {"u1", torch::kByte, torch::kByte, 1},
                                   {"i1", torch::kChar, torch::kChar, 1},     {"i2", torch::kShort, torch::kShort, 2},
                                   {"i4", torch::kInt, torch::kInt, 4},       {"i8", torch::kLong, torch::kLong, 8},
                                   {"f2", torch::kHalf, torch::kHalf, 2},     {"f4", torch::kFloat, torch::kFloat, 4},
                                   {"f8", torch::kDouble, torch::kDouble, 8}, {"u2", torch::kShort, torch::kInt, 2},
                                   {"u4", torch::kInt, torch::kLong, 4}};

// `stored` values as `read`: unsigned 16- and 32-bit integers stored in the signed type.
torch::Tensor widen(const torch::Tensor& t, torch::ScalarType stored, torch::ScalarType read) {
  if (stored == read) return t;
  const int64_t mask = stored == torch::kShort ? 0xFFFF : 0xFFFFFFFFLL;
  return t.to(read).bitwise_and_(mask);
}

// The value of `key` in NumPy's header dict ("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }").
std::string header_value(const std::string& header, const std::string& key, const std::string& file) {
  const auto at = header.find("'" + key + "'");
  const auto colon = at == std::string::npos ? at : header.find(':', at);
  if (colon == std::string::npos) {
    throw CorruptionError("\"" + file + "\": the .npy header has no '" + key + "' (" + header + ")");
  }
  const std::size_t begin = header.find_first_not_of(' ', colon + 1);
  std::size_t end = std::string::npos;
  if (begin != std::string::npos) {
    if (header[begin] == '(') {
      end = header.find(')', begin);
      if (end != std::string::npos) ++end;
    } else if (header[begin] == '\'') {
      end = header.find('\'', begin + 1);
      if (end != std::string::npos) ++end;
    } else {
      end = header.find_first_of(",}", begin);
    }
  }
  if (end == std::string::npos) {
    throw CorruptionError("\"" + file + "\": the .npy header's '" + key + "' has no value (" + header + ")");
  }
  return header.substr(begin, end - begin);
}

}  // namespace

std::vector<std::string> expand_files(const std::string& dir, const std::string& pattern, const std::string& where) {
  const std::string full = std::filesystem::path(pattern).is_absolute() || dir.empty() ? pattern : dir + "/" + pattern;
  if (pattern.find_first_of("*?[") == std::string::npos) return {full};
  glob_t found{};
  const int rc = ::glob(full.c_str(), 0, nullptr, &found);
  std::vector<std::string> out;
  if (rc == 0) {
    for (std::size_t i = 0; i < found.gl_pathc; ++i) out.emplace_back(found.gl_pathv[i]);
  }
  globfree(&found);
  if (out.empty()) throw ConfigError(where + ": no file matches \"" + full + "\"");
  std::sort(out.begin(), out.end());
  return out;
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + ")";
}

NpyArray read_npy_header(std::shared_ptr<const io::RandomAccessFile> file) {
  const std::string& name = file->path();
  const auto bad = [&](const std::string& what) {
    return CorruptionError("\"" + name + "\" is not an array np.save can have written: " + what);
  };
  const std::size_t file_size = file->size();
  const std::string bytes = file->read(0, std::min<std::size_t>(file_size, 12));
  if (bytes.size() < 10 || bytes.substr(0, 6) != "\x93NUMPY") throw bad("it does not start with \\x93NUMPY");
  const auto major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, start = 0;
  if (major == 1) {
    header_len =
        static_cast<unsigned char>(bytes[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(bytes[9])) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) throw bad("its header is cut short");
    for (int b = 3; b >= 0; --b) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + b]);
    start = 12;
  } else {
    throw bad("format version " + std::to_string(major) + " (kd reads 1 to 3)");
  }
  if (start + header_len > file_size || header_len > (1U << 20)) throw bad("its header is cut short or too long");
  const std::string header = file->read(start, header_len);
  NpyArray out;
  out.file = std::move(file);
  out.data_offset = start + header_len;
  std::string descr = header_value(header, "descr", name);
  if (descr.size() < 4 || descr.front() != '\'') throw bad("descr " + descr);
  descr = descr.substr(1, descr.size() - 2);
  const char order = descr[0];
  const std::string kind = descr.substr(1);
  const Stored* stored = nullptr;
  for (const Stored& s : kStoredTypes) {
    if (kind == s.descr) stored = &s;
  }
  if (stored == nullptr || (order == '>' && stored->size > 1)) {
    throw CorruptionError("\"" + name + "\" holds dtype '" + descr +
                          "'; kd reads little-endian bool, int8/16/32/64, uint8/16/32 and float16/32/64 arrays "
                          "(np.save(f, x.astype('<f4')), say)");
  }
  out.stored = stored->stored;
  out.dtype = stored->read;
  out.item_size = stored->size;
  if (header_value(header, "fortran_order", name) != "False") {
    throw CorruptionError("\"" + name + "\" is in Fortran order; save np.ascontiguousarray(x) instead");
  }
  const std::string shape = header_value(header, "shape", name);
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') throw bad("shape " + shape + " is not a tuple");
  std::size_t pos = 1;
  while (pos < shape.size()) {
    const auto next = shape.find_first_of(",)", pos);  // found: the tuple ends with ')'
    if (next == std::string::npos) break;
    const std::string part = shape.substr(pos, next - pos);
    if (part.find_first_not_of(' ') != std::string::npos) {
      try {
        out.shape.push_back(std::stoll(part));
      } catch (const std::exception&) {
        throw bad("shape " + shape);
      }
    }
    pos = next + 1;
  }
  if (out.shape.empty()) throw CorruptionError("\"" + name + "\" holds a scalar, not an array of examples");
  std::size_t elements = 1;
  for (const int64_t d : out.shape) {
    if (d < 0 ||
        (d > 0 && elements > (std::numeric_limits<std::size_t>::max() / out.item_size) / static_cast<std::size_t>(d))) {
      throw bad("shape " + shape);
    }
    elements *= static_cast<std::size_t>(d);
  }
  const std::size_t data = file_size - out.data_offset;
  if (data != elements * out.item_size) {
    throw CorruptionError("\"" + name + "\" holds " + std::to_string(data) + " bytes of data, but its header says " +
                          shape_text(out.shape) + " of '" + descr + "', " + std::to_string(elements * out.item_size) +
                          " bytes: the file is " + (data < elements * out.item_size ? "cut short" : "longer"));
  }
  return out;
}

torch::Tensor npy_example(const NpyArray& array, int64_t i) {
  const std::vector<int64_t> shape(array.shape.begin() + 1, array.shape.end());
  torch::Tensor out = torch::empty(shape, torch::TensorOptions().dtype(array.stored));
  const std::size_t bytes = static_cast<std::size_t>(out.numel()) * array.item_size;
  array.file->read(array.data_offset + static_cast<std::size_t>(i) * bytes, bytes, out.data_ptr());
  return widen(out, array.stored, array.dtype);
}

NpySource::NpySource(const config::Node& o) : path_(o.get_string("path")) {
  const config::Node fields = o.child("fields");
  const std::string where = fields.where();
  if (!fields.is_map() || fields.keys().empty()) {
    throw ConfigError(where + ": fields maps each batch key to its .npy file, e.g. {image: x.npy, label: y.npy}");
  }
  for (const std::string& key : fields.keys()) {
    Field field{key, {}};
    for (const std::string& file : expand_files(path_, fields.get_string(key), fields.child(key).where())) {
      field.shards.push_back(read_npy_header(io::RandomAccessFile::open(file)));
    }
    fields_.push_back(std::move(field));
  }
  const Field& first = fields_.front();
  shard_starts_.push_back(0);
  for (std::size_t s = 0; s < first.shards.size(); ++s) {
    const int64_t n = first.shards[s].shape[0];
    for (const Field& f : fields_) {
      if (f.shards.size() != first.shards.size()) {
        throw ConfigError(where + ": field \"" + f.name + "\" has " + std::to_string(f.shards.size()) + " files, \"" +
                          first.name + "\" " + std::to_string(first.shards.size()) +
                          "; every field needs one file per shard");
      }
      const NpyArray& a = f.shards[s];
      if (a.shape[0] != n) {
        throw CorruptionError("\"" + a.file->path() + "\" holds " + std::to_string(a.shape[0]) + " examples, \"" +
                              first.shards[s].file->path() + "\" " + std::to_string(n) +
                              ": the fields of a shard need one example each");
      }
      if (std::vector<int64_t>(a.shape.begin() + 1, a.shape.end()) !=
          std::vector<int64_t>(f.shards[0].shape.begin() + 1, f.shards[0].shape.end())) {
        throw CorruptionError("\"" + a.file->path() + "\" has examples of shape " + shape_text(a.shape) + ", \"" +
                              f.shards[0].file->path() + "\" " + shape_text(f.shards[0].shape) +
                              ": the shards of a field need one example shape");
      }
    }
    shard_starts_.push_back(shard_starts_.back() + n);
  }
  size_ = shard_starts_.back();
}

Tree NpySource::get(int64_t index) const {
  const auto shard = static_cast<std::size_t>(std::upper_bound(shard_starts_.begin(), shard_starts_.end(), index) -
                                              shard_starts_.begin() - 1);
  Tree out = Tree::dict();
  for (const Field& f : fields_) out.insert(f.name, npy_example(f.shards[shard], index - shard_starts_[shard]));
  return out;
}

std::string NpySource::describe() const {
  std::string out = "Npy " + path_ + " {";
  for (std::size_t i = 0; i < fields_.size(); ++i) {
    const NpyArray& a = fields_[i].shards.front();
    out += (i ? ", " : "") + fields_[i].name + ": " + dtype_name(a.dtype) +
           shape_text(std::vector<int64_t>(a.shape.begin() + 1, a.shape.end()));
  }
  out += "}";
  if (fields_.front().shards.size() > 1) out += " in " + std::to_string(fields_.front().shards.size()) + " shards";
  return out;
}

TokenFile::TokenFile(const config::Node& o)
    : pattern_(o.get_string("path")),
      split_(o.get_string("split", "all")),
      dtype_name_(o.get_string("dtype", "uint16")),
      seq_len_(o.get_int_in("seq_len", std::nullopt, 1, int64_t{1} << 24)) {
  if (dtype_name_ == "uint8") {
    stored_ = torch::kByte;
    item_size_ = 1;
  } else if (dtype_name_ == "uint16") {
    stored_ = torch::kShort;
    item_size_ = 2;
  } else if (dtype_name_ == "uint32") {
    stored_ = torch::kInt;
    item_size_ = 4;
  } else {
    throw ConfigError(o.child("dtype").where() + ": dtype must be uint8 (bytes), uint16 or uint32, got \"" +
                      dtype_name_ + "\"");
  }
  if (split_ != "all" && split_ != "train" && split_ != "test") {
    throw ConfigError(o.child("split").where() + ": split must be all, train or test, got \"" + split_ + "\"");
  }
  const double test_fraction = o.get_double_in("test_fraction", 0.1, 0.0, 1.0);
  const int64_t split_seed = o.get_int_in("split_seed", 0, 0, std::numeric_limits<int64_t>::max());
  if (split_ == "all" && (o.has("test_fraction") || o.has("split_seed"))) {
    throw ConfigError(o.where() + ": test_fraction and split_seed divide the files for split: train or split: test");
  }
  if (o.has("vocab_size")) vocab_size_ = o.get_int_in("vocab_size", std::nullopt, 1, int64_t{1} << 32);
  std::vector<std::string> paths = expand_files("", pattern_, o.child("path").where());
  if (split_ != "all") {
    const auto n = static_cast<int64_t>(paths.size());
    const std::vector<int64_t> kept = split_rows(n, test_fraction, static_cast<uint64_t>(split_seed), split_ == "test");
    if (kept.empty()) {
      throw ConfigError(o.child("path").where() + ": \"" + pattern_ + "\" matches " + std::to_string(n) +
                        " files, which leaves none for split " + split_ + " at test_fraction " +
                        std::to_string(test_fraction) + "; give more files or another test_fraction");
    }
    std::vector<std::string> chosen;
    for (int64_t i : kept) chosen.push_back(paths[static_cast<std::size_t>(i)]);
    paths = std::move(chosen);
  }
  starts_.push_back(0);
  for (const std::string& path : paths) {
    auto file = io::RandomAccessFile::open(path);
    if (file->size() % item_size_ != 0) {
      throw CorruptionError("\"" + file->path() + "\" holds " + std::to_string(file->size()) +
                            " bytes, not a whole number of " + dtype_name_ + " tokens: is dtype right?");
    }
    starts_.push_back(starts_.back() + static_cast<int64_t>(file->size() / item_size_));
    files_.push_back(std::move(file));
  }
  tokens_ = starts_.back();
  windows_ = (tokens_ - 1) / seq_len_;
  if (windows_ < 1) {
    throw ConfigError(o.child("seq_len").where() + ": \"" + pattern_ + "\" holds " + std::to_string(tokens_) +
                      " tokens, fewer than seq_len + 1 = " + std::to_string(seq_len_ + 1));
  }
}

Tree TokenFile::get(int64_t index) const {
  torch::Tensor stored = torch::empty({seq_len_ + 1}, torch::TensorOptions().dtype(stored_));
  auto* out = static_cast<char*>(stored.data_ptr());
  // Tokens [first, first + seq_len] from the file(s) that hold them.
  const int64_t first = index * seq_len_;
  int64_t token = first;
  const int64_t end = first + seq_len_ + 1;
  auto file = std::upper_bound(starts_.begin(), starts_.end(), token) - starts_.begin() - 1;
  while (token < end) {
    const auto f = static_cast<std::size_t>(file);
    const int64_t take = std::min(end, starts_[f + 1]) - token;
    files_[f]->read(static_cast<std::size_t>(token - starts_[f]) * item_size_,
                    static_cast<std::size_t>(take) * item_size_,
                    out + static_cast<std::size_t>(token - first) * item_size_);
    token += take;
    ++file;
  }
  torch::Tensor tokens = stored_ == torch::kByte ? stored.to(torch::kLong) : widen(stored, stored_, torch::kLong);
  if (vocab_size_) {
    const torch::Tensor outside = tokens.ge(*vocab_size_).nonzero();
    if (outside.size(0) > 0) {
      const int64_t k = first + outside[0][0].item<int64_t>();
      const auto f =
          static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), k) - starts_.begin() - 1);
      throw CorruptionError("\"" + files_[f]->path() + "\": token " + std::to_string(k - starts_[f]) + " is " +
                            std::to_string(tokens[k - first].item<int64_t>()) + ", not below vocab_size " +
                            std::to_string(*vocab_size_) + " (is dtype right?)");
    }
  }
  return Tree::dict({{"inputs", tokens.narrow(0, 0, seq_len_)}, {"targets", tokens.narrow(0, 1, seq_len_)}});
}

std::string TokenFile::describe() const {
  std::string where =
      files_.size() == 1 ? files_.front()->path() : pattern_ + " (" + std::to_string(files_.size()) + " files)";
  if (split_ != "all") where += ", split " + split_;
  return "TokenFile " + where + " (" + std::to_string(tokens_) + " " + dtype_name_ + " tokens, windows of " +
         std::to_string(seq_len_) + ")";
}

}  // namespace kd::data
