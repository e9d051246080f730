// Data sources: a whole dataset as one tree of tensors whose first dimension is the example
// (e.g. {image: uint8 [60000, 28, 28], label: int64 [60000]}), or, for data larger than memory,
// one example at a time by index (random access). The pipeline batches, shuffles and transforms;
// sources only read.
//
//   train_ds: {type: FashionMnist, split: train, batch_size: 128, ...}
//
// Built-ins: FashionMnist and Mnist (IDX files, gzipped or not), Csv (a table of the user's,
// csv_source_internal.h), ImageFolder (pictures decoded as read, image_folder_internal.h), Npy
// and TokenFile (NumPy arrays and token files read by index, array_files_internal.h), Hdf5
// (datasets of HDF5 files read by index, hdf5_source_internal.h),
// Synthetic (random features and a learnable label, for tests), and InMemory (tensors given
// from C++ through `in_memory_source`).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/config/registry.h"
#include "trainer/tree/tree.h"

namespace kd::data {

class Source {
 public:
  virtual ~Source() = default;
  // Every example; leaves share their first dimension. Called once per pipeline of an in-memory
  // source; a random-access source's (below) stacks every example, for tests and small data.
  virtual Tree load() const;

  // Random access: a source that reads one example when a batch needs it (ImageFolder, Npy,
  // TokenFile, Hdf5) returns true and overrides size() and get(); the pipeline then never calls
  // load(), and runs the transforms on each example.
  virtual bool random_access() const { return false; }
  // The number of examples; called before any get() (a source may list its files here).
  virtual int64_t size() const;
  // Example `index` in [0, size()), its leaves without the example dimension. Called from
  // several worker threads at once; an unreadable example is an error naming its file.
  virtual Tree get(int64_t index) const;
  // How messages name example `index` (its file, say); "example <index>" by default.
  virtual std::string name_of(int64_t index) const { return "example " + std::to_string(index); }

  // A short description for logs ("FashionMnist train (60000 examples)").
  virtual std::string describe() const = 0;
  // What the run should warn about the data (after load()), e.g. a column that looks misread.
  virtual std::vector<std::string> warnings() const { return {}; }
};

using SourcePtr = std::shared_ptr<const Source>;

config::Registry<Source>& source_registry();

// A source over tensors built in C++ (e.g. by a user program).
SourcePtr in_memory_source(Tree examples, std::string name = "InMemory");

// One batch from examples that each have a leading dimension (of 1, or more): every leaf
// concatenated along it. A leaf that is missing, or differs in dtype or in its other sizes,
// is a kd::TypeError that names both examples (`name(k)`: the k-th example, for messages).
Tree stack_examples(const std::vector<Tree>& examples, const std::function<std::string(std::size_t)>& name);

// The number of examples of a loaded source; throws kd::CorruptionError when leaves disagree.
int64_t num_examples(const Tree& examples, const std::string& what);

}  // namespace kd::data
