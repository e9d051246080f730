// Data sources: a whole dataset as one tree of tensors whose first dimension is the example
// (e.g. {image: uint8 [60000, 28, 28], label: int64 [60000]}). The pipeline batches, shuffles
// and transforms it; sources only load.
//
//   train_ds: {type: FashionMnist, split: train, batch_size: 128, ...}
//
// Built-ins: FashionMnist and Mnist (IDX files, gzipped or not), Csv (a table of the user's,
// csv_source_internal.h),
// Synthetic (random features and a learnable label, for tests), and InMemory (tensors given
// from C++ through `in_memory_source`).
#pragma once

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
  // Every example; leaves share their first dimension. Called once per pipeline.
  virtual Tree load() const = 0;
  // A short description for logs ("FashionMnist train (60000 examples)").
  virtual std::string describe() const = 0;
  // What the run should warn about the data (after load()), e.g. a column that looks misread.
  virtual std::vector<std::string> warnings() const { return {}; }
};

using SourcePtr = std::shared_ptr<const Source>;

config::Registry<Source>& source_registry();

// A source over tensors built in C++ (e.g. by a user program).
SourcePtr in_memory_source(Tree examples, std::string name = "InMemory");

// The number of examples of a loaded source; throws kd::CorruptionError when leaves disagree.
int64_t num_examples(const Tree& examples, const std::string& what);

}  // namespace kd::data
