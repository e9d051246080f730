// Sources over files read by index: nothing is loaded at start, an example is one read of its
// own bytes when a batch needs it (from the kernel's page cache while memory is free):
//
// Npy: arrays written by NumPy's np.save, one file per field (or shards of them):
//   train_ds: {type: Npy, path: data, fields: {image: train_x.npy, label: train_y.npy}}
//   train_ds: {type: Npy, path: data, fields: {image: "x_*.npy", label: "y_*.npy"}}  # shards
// `path` is the directory (relative to the experiment file); a field is a file under it, or a
// glob whose matches, in sorted order, are concatenated (every field the same number of files,
// shard by shard the same length). batch.<field> is example i of each array. Little-endian
// bool, int8/16/32/64, uint8, float16/32/64 are read as they are; uint16 and uint32 become
// int32 and int64 (LibTorch has no such types). A header, dtype, shape or length that does not
// fit is an error naming the file.
//
// TokenFile: a flat file of token ids, as nanoGPT's prepare.py and llm.c write train.bin
// (uint16; uint32 for vocabularies above 65536), or raw bytes (dtype: uint8: text read as bytes,
// a vocabulary of 256):
//   train_ds: {type: TokenFile, path: train.bin, dtype: uint16, seq_len: 256, vocab_size: 50257}
// Example i is the window of seq_len + 1 tokens from i * seq_len: batch.inputs (its first
// seq_len) and batch.targets (its last seq_len), int64. A shuffled epoch visits every window
// once. A token >= vocab_size (when given) is an error naming the file and its offset.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/data/source.h"
#include "trainer/io/random_access_file.h"

namespace kd::data {

// The files `pattern` names under `dir` (unless absolute or `dir` is empty): itself, or a glob's
// matches in sorted order; a ConfigError at `where` when a glob matches nothing.
std::vector<std::string> expand_files(const std::string& dir, const std::string& pattern, const std::string& where);
// "(3, 4)".
std::string shape_text(const std::vector<int64_t>& shape);

// One .npy file, its header read and checked against its length.
struct NpyArray {
  std::shared_ptr<const io::RandomAccessFile> file;
  torch::ScalarType stored;  // the element type in the file
  torch::ScalarType dtype;   // as read (uint16 -> int32, uint32 -> int64)
  std::vector<int64_t> shape;
  std::size_t data_offset = 0;
  std::size_t item_size = 0;
};
// Throws kd::CorruptionError naming the file for anything but a C-ordered little-endian array of
// a supported dtype whose data fills the file.
NpyArray read_npy_header(std::shared_ptr<const io::RandomAccessFile> file);
// Example i (the array's first axis) of an array, copied and converted to its read dtype.
torch::Tensor npy_example(const NpyArray& array, int64_t i);

class NpySource : public Source {
 public:
  explicit NpySource(const config::Node& options);
  bool random_access() const override { return true; }
  int64_t size() const override { return size_; }
  Tree get(int64_t index) const override;
  std::string describe() const override;

 private:
  struct Field {
    std::string name;
    std::vector<NpyArray> shards;
  };
  std::string path_;
  std::vector<Field> fields_;
  std::vector<int64_t> shard_starts_;  // the first example of each shard, and the total at the end
  int64_t size_ = 0;
};

// TokenFile: token ids in flat files (nanoGPT's train.bin; any file read as bytes with dtype
// uint8), example i being the window of tokens [i*seq_len, (i+1)*seq_len] (inputs and targets
// one token ahead). `path` may be a glob: its files, sorted, are read as one stream (a window
// may span two files), and split: train|test keeps test_fraction of the files (chosen by
// split_seed, as ImageFolder chooses pictures) for test: text split by file, such as a
// language-model validation set from the same corpus.
class TokenFile : public Source {
 public:
  explicit TokenFile(const config::Node& options);
  bool random_access() const override { return true; }
  int64_t size() const override { return windows_; }
  Tree get(int64_t index) const override;
  std::string describe() const override;

 private:
  std::vector<std::shared_ptr<const io::RandomAccessFile>> files_;
  std::vector<int64_t> starts_;  // the first token of each file, and the total at the end
  std::string pattern_, split_, dtype_name_;
  torch::ScalarType stored_;
  std::size_t item_size_ = 1;
  int64_t seq_len_ = 0, tokens_ = 0, windows_ = 0;
  std::optional<int64_t> vocab_size_;
};

}  // namespace kd::data
