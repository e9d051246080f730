#include "trainer/data/source.h"

#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/common/tensor_text.h"
#include "trainer/data/array_files_internal.h"
#include "trainer/data/csv_source_internal.h"
#include "trainer/data/hdf5_source_internal.h"
#include "trainer/data/idx.h"
#include "trainer/data/image_folder_internal.h"

namespace kd::data {
namespace {

// Fashion-MNIST / MNIST from the four IDX files of their usual names under `path`.
class IdxImages : public Source {
 public:
  IdxImages(const config::Node& o, std::string name, std::string default_path)
      : name_(std::move(name)),
        path_(o.get_string("path", default_path)),
        split_(o.get_string("split", "train")),
        limit_(o.get_int_in("num_examples", 0, 0, std::numeric_limits<int64_t>::max())) {
    if (split_ != "train" && split_ != "test") {
      throw ConfigError(o.where() + ": split must be \"train\" or \"test\", got \"" + split_ + "\"");
    }
  }

  Tree load() const override {
    const std::string prefix = path_ + "/" + (split_ == "train" ? "train" : "t10k");
    torch::Tensor images = read_idx(find(prefix + "-images-idx3-ubyte"));
    torch::Tensor labels = read_idx(find(prefix + "-labels-idx1-ubyte")).to(torch::kLong);
    if (images.dim() != 3 || labels.dim() != 1 || images.size(0) != labels.size(0)) {
      throw CorruptionError(name_ + " files under \"" + path_ + "\" disagree: images " + describe_tensor(images) +
                            ", labels " + describe_tensor(labels));
    }
    // Both datasets have ten classes: any other byte in the label file is damage.
    if (const torch::Tensor outside = labels.ge(10).nonzero(); outside.size(0) > 0) {
      const int64_t i = outside[0][0].item<int64_t>();
      throw CorruptionError(find(prefix + "-labels-idx1-ubyte") + ": label " + std::to_string(i) + " is " +
                            std::to_string(labels[i].item<int64_t>()) + ", not a class of " + name_ +
                            " (0-9); the file is damaged: download it again");
    }
    if (limit_ > 0 && limit_ < images.size(0)) {
      images = images.narrow(0, 0, limit_).clone();
      labels = labels.narrow(0, 0, limit_).clone();
    }
    return Tree::dict({{"image", images}, {"label", labels}});
  }

  std::string describe() const override { return name_ + " " + split_ + " from " + path_; }

 private:
  static std::string find(const std::string& stem) {
    for (const std::string& candidate : {stem + ".gz", stem}) {
      if (std::ifstream(candidate).good()) return candidate;
    }
    return stem + ".gz";  // read_idx reports the missing file
  }

  std::string name_, path_, split_;
  int64_t limit_;
};

// Random features and a label that is a fixed function of them (learnable): for tests and
// benchmarks that must not depend on files.
class Synthetic : public Source {
 public:
  explicit Synthetic(const config::Node& o)
      : n_(o.get_int_in("num_examples", 1024, 1, int64_t{1} << 32)),
        features_(o.get_int_in("num_features", 16, 1, int64_t{1} << 20)),
        classes_(o.get_int_in("num_classes", 4, 1, int64_t{1} << 20)),
        seed_(o.get_int_in("seed", 0, 0, std::numeric_limits<int64_t>::max())) {}

  Tree load() const override {
    auto gen = torch::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed_));
    const torch::Tensor x = at::randn({n_, features_}, gen);
    const torch::Tensor w = torch::arange(features_ * classes_, torch::kFloat).reshape({features_, classes_}).sin();
    return Tree::dict({{"image", x}, {"label", x.mm(w).argmax(1)}});
  }

  std::string describe() const override { return "Synthetic"; }

 private:
  int64_t n_, features_, classes_, seed_;
};

class InMemory : public Source {
 public:
  InMemory(Tree examples, std::string name) : examples_(std::move(examples)), name_(std::move(name)) {}
  Tree load() const override { return examples_; }
  std::string describe() const override { return name_; }

 private:
  Tree examples_;
  std::string name_;
};

}  // namespace

config::Registry<Source>& source_registry() {
  return config::Registry<Source>::built_once("data source", [](config::Registry<Source>& r) {
    r.add(
        "FashionMnist",
        [](const config::Node& o) {
          return std::make_shared<IdxImages>(o, "FashionMnist", "/usr/share/datasets/fashion-mnist");
        },
        "split=train|test, path=/usr/share/datasets/fashion-mnist, num_examples=all");
    r.add(
        "Mnist",
        [](const config::Node& o) { return std::make_shared<IdxImages>(o, "Mnist", "/usr/share/datasets/mnist"); },
        "split=train|test, path=/usr/share/datasets/mnist, num_examples=all");
    r.add(
        "Csv", [](const config::Node& o) { return std::make_shared<CsvSource>(o); },
        "path (relative to the experiment file), header=true, label_column (a header name or a 0-based index, -1: "
        "the last; none: no label), classes (the order of word labels; default: sorted), split=all|train|test, "
        "test_fraction=0.2, split_seed=0, label_dtype=auto|int64|float32, num_classes and ignore_label (class "
        "indices checked at load). Gives batch.features (float32 [N, columns but the label]) and "
        "batch.label (int64 class indices for whole numbers or words, else float32)");
    r.add(
        "ImageFolder", [](const config::Node& o) { return std::make_shared<ImageFolder>(o); },
        "path (PATH/<class>/<image>.png|jpg, relative to the experiment file), size [H, W] (resize as read; "
        "default: every image one size), channels=3|1, classes (default: the folders, sorted), "
        "split=all|train|test, test_fraction=0.2, split_seed=0. Each picture decoded when a batch needs it. Gives "
        "batch.image (uint8 [N, H, W, C]) and batch.label (int64)");
    r.add(
        "Npy", [](const config::Node& o) { return std::make_shared<NpySource>(o); },
        "path (the directory, relative to the experiment file), fields: {batch key: file.npy or a glob of shards}. "
        "Read an example at a time. Gives batch.<key>: example i of each array");
    r.add(
        "Hdf5", [](const config::Node& o) { return std::make_shared<Hdf5Source>(o); },
        "path (an HDF5 file, relative to the experiment file, or a glob of shards), fields: {batch key: dataset "
        "name}. Read an example at a time (contiguous datasets directly, chunked or compressed ones through "
        "libhdf5). Gives batch.<key>: example i of each dataset");
    r.add(
        "TokenFile", [](const config::Node& o) { return std::make_shared<TokenFile>(o); },
        "path (a flat token file: nanoGPT's train.bin, or any file read as bytes; a glob: its files, sorted, as one "
        "stream), dtype=uint16|uint32|uint8, seq_len, vocab_size (checked when given), split=all|train|test, "
        "test_fraction=0.1 and split_seed=0 (of the files). Read a window at a time; example i is tokens "
        "[i*seq_len, (i+1)*seq_len]. "
        "Gives batch.inputs and batch.targets (int64 [N, seq_len], targets one token ahead)");
    r.add(
        "Synthetic", [](const config::Node& o) { return std::make_shared<Synthetic>(o); },
        "num_examples=1024, num_features=16, num_classes=4, seed=0");
  });
}

Tree Source::load() const {
  if (!random_access()) throw Error(describe() + " neither loads whole nor reads examples by index");
  std::vector<Tree> examples;
  const int64_t n = size();
  for (int64_t i = 0; i < n; ++i) examples.push_back(get(i).map([](const torch::Tensor& t) { return t.unsqueeze(0); }));
  return stack_examples(examples, [&](std::size_t k) { return name_of(static_cast<int64_t>(k)); });
}

int64_t Source::size() const { throw Error(describe() + " is not a random-access source"); }

Tree Source::get(int64_t) const { throw Error(describe() + " is not a random-access source"); }

Tree stack_examples(const std::vector<Tree>& examples, const std::function<std::string(std::size_t)>& name) {
  if (examples.empty()) throw Error("no examples to stack");
  const Tree& first = examples.front();
  return first.map_with_path([&](const Path& path, const torch::Tensor& leaf) {
    std::vector<torch::Tensor> parts;
    parts.reserve(examples.size());
    for (std::size_t k = 0; k < examples.size(); ++k) {
      const std::optional<Tree> found = examples[k].try_get(path);
      if (!found || !found->is_tensor()) {
        throw TypeError(name(k) + " has no tensor \"" + path.str() + "\", which " + name(0) + " has");
      }
      const torch::Tensor& t = found->tensor();
      if (t.dim() != leaf.dim() || t.sizes().slice(1) != leaf.sizes().slice(1) ||
          t.scalar_type() != leaf.scalar_type()) {
        throw TypeError("the examples of a batch differ: \"" + path.str() + "\" of " + name(0) + " is " +
                        describe_tensor(leaf.squeeze(0)) + ", of " + name(k) + " " + describe_tensor(t.squeeze(0)) +
                        "; give every example one shape (a source's size option, or a Resize or crop transform)");
      }
      parts.push_back(t);
    }
    return parts.size() == 1 ? parts.front() : torch::cat(parts);
  });
}

SourcePtr in_memory_source(Tree examples, std::string name) {
  return std::make_shared<InMemory>(std::move(examples), std::move(name));
}

int64_t num_examples(const Tree& examples, const std::string& what) {
  int64_t n = -1;
  for (const auto& [path, leaf] : examples.flatten()) {
    if (!leaf.is_tensor() || leaf.tensor().dim() == 0) {
      throw CorruptionError(what + ": \"" + path + "\" is not a tensor with an example dimension");
    }
    const int64_t rows = leaf.tensor().size(0);
    if (n >= 0 && rows != n) {
      throw CorruptionError(what + ": \"" + path + "\" has " + std::to_string(rows) + " examples, other fields " +
                            std::to_string(n));
    }
    n = rows;
  }
  if (n < 0) throw CorruptionError(what + " holds no tensors");
  return n;
}

}  // namespace kd::data
