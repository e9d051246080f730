// Hdf5: datasets of an HDF5 file (h5py's, or any HDF5 writer's) read an example at a time, by
// dataset name and index along the first axis:
//
//   train_ds: {type: Hdf5, path: data.h5, fields: {image: /train/images, label: /train/labels}}
//   train_ds: {type: Hdf5, path: "shards/part-*.h5", fields: {image: x, label: y}}  # shards
//
// `path` is the file (relative to the experiment file) or a glob of files, concatenated in sorted
// order, each holding every field's dataset. batch.<field> is example i of each dataset. Integer
// (8 to 64 bits; uint16 and uint32 read as int32 and int64), float (16, 32, 64 bits) and bool
// (h5py's enum) datasets of either byte order. A missing dataset, an unsupported type, fields of
// different lengths or shards of different example shapes is an error naming the file and
// dataset.
//
// Reads: a contiguous dataset without filters (h5py's default, chunks=None) in the machine's byte
// order is read with one pread of the example's bytes at the offset HDF5 reports, by every worker
// at once. Any other layout (chunked, compressed) goes through H5Dread, which Debian's
// thread-safe libhdf5 serialises, and decompresses the chunks the example touches (a cache of
// 64 MiB shared by all datasets keeps chunks decompressed for their neighbours): for data read
// in a shuffled order, chunk by one example (h5py: chunks=(1, *shape[1:])) or store it
// contiguous.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/data/source.h"
#include "trainer/io/random_access_file.h"

namespace kd::data {

class Hdf5Source : public Source {
 public:
  explicit Hdf5Source(const config::Node& options);
  ~Hdf5Source() override;
  Hdf5Source(const Hdf5Source&) = delete;
  Hdf5Source& operator=(const Hdf5Source&) = delete;

  bool random_access() const override { return true; }
  int64_t size() const override { return size_; }
  Tree get(int64_t index) const override;
  std::string name_of(int64_t index) const override;
  std::string describe() const override;
  std::vector<std::string> warnings() const override;

  // One dataset of one file, opened (its HDF5 identifiers held until the source goes).
  struct Dataset {
    std::string file_name, name;
    int64_t dataset = -1;      // hid_t
    int64_t memory_type = -1;  // hid_t: the type it is read as
    torch::ScalarType dtype{};
    std::vector<int64_t> shape;
    std::size_t example_bytes = 0;
    // Contiguous, unfiltered and stored as read: the file offset of its data, for pread.
    std::shared_ptr<const io::RandomAccessFile> direct;
    std::size_t offset = 0;
    int64_t compressed_chunk = 0;  // examples per chunk of a filtered chunked dataset
  };

 private:
  std::size_t shard_of(int64_t index) const;
  void check_shards();
  void close_all();

  std::string pattern_;
  std::vector<std::string> field_names_;
  std::vector<int64_t> files_;                // hid_t per shard
  std::vector<std::vector<Dataset>> shards_;  // [shard][field]
  std::vector<int64_t> shard_starts_;         // the first example of each shard, and the total
  int64_t size_ = 0;
};

}  // namespace kd::data
