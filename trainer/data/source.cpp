#include "trainer/data/source.h"

#include <fstream>
#include <sstream>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/data/idx.h"

namespace kd::data {
namespace {

// Fashion-MNIST / MNIST from the four IDX files of their usual names under `path`.
class IdxImages : public Source {
 public:
  IdxImages(const config::Node& o, std::string name, std::string default_path)
      : name_(std::move(name)),
        path_(o.get_string("path", default_path)),
        split_(o.get_string("split", "train")),
        limit_(o.get_int("num_examples", 0)) {
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

// A cell without surrounding blanks or double quotes.
std::string trim(const std::string& cell) {
  const auto first = cell.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  std::string out = cell.substr(first, cell.find_last_not_of(" \t") - first + 1);
  if (out.size() >= 2 && out.front() == '"' && out.back() == '"') out = out.substr(1, out.size() - 2);
  return out;
}

// A table of numbers: every column but `label_column` becomes `features` (float32 [N, F]).
class Csv : public Source {
 public:
  explicit Csv(const config::Node& o)
      : path_(o.get_string("path")),
        label_column_(o.get_string("label_column", "")),
        header_(o.get_bool("header", true)) {}

  Tree load() const override {
    std::ifstream in(path_);
    if (!in) throw IOError("cannot read the CSV file \"" + path_ + "\"");
    if (!header_ && !label_column_.empty()) {
      throw ConfigError("\"" + path_ + "\": label_column \"" + label_column_ +
                        "\" names a column of the header, but header is false");
    }
    std::string line;
    std::vector<std::string> names;
    int64_t label_index = -1;
    int64_t line_no = 0;
    std::vector<float> features;
    std::vector<float> labels;
    int64_t columns = -1;
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();  // a file with Windows line ends
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      std::vector<std::string> cells;
      std::stringstream s(line);
      for (std::string cell; std::getline(s, cell, ',');) cells.push_back(trim(cell));
      if (line.back() == ',') cells.emplace_back();  // an empty last cell
      if (header_ && names.empty()) {
        names = cells;
        if (!label_column_.empty()) {
          for (std::size_t i = 0; i < names.size(); ++i) {
            if (names[i] == label_column_) label_index = static_cast<int64_t>(i);
          }
          if (label_index < 0) {
            throw ConfigError("\"" + path_ + "\" has no column \"" + label_column_ + "\" (its header, line " +
                              std::to_string(line_no) + ", names: " + join_names(names) + ")");
          }
        }
        if (static_cast<int64_t>(names.size()) - (label_index >= 0 ? 1 : 0) < 1) {
          throw ConfigError("\"" + path_ + "\" has no feature column besides the label column \"" + label_column_ +
                            "\"");
        }
        continue;
      }
      if (columns < 0) {
        columns = static_cast<int64_t>(cells.size());
        if (header_ && columns != static_cast<int64_t>(names.size())) {
          throw CorruptionError(path_ + ":" + std::to_string(line_no) + ": the header names " +
                                std::to_string(names.size()) + " columns but this row has " + std::to_string(columns));
        }
      }
      if (static_cast<int64_t>(cells.size()) != columns) {
        throw CorruptionError(path_ + ":" + std::to_string(line_no) + ": expected " + std::to_string(columns) +
                              " columns, found " + std::to_string(cells.size()));
      }
      for (int64_t i = 0; i < columns; ++i) {
        float v;
        try {
          std::size_t used = 0;
          v = std::stof(cells[i], &used);
          if (used != cells[i].size()) throw std::invalid_argument("");
        } catch (const std::exception&) {
          throw CorruptionError(path_ + ":" + std::to_string(line_no) + ": column " + std::to_string(i + 1) +
                                " is not a number: \"" + cells[i] + "\"");
        }
        (i == label_index ? labels : features).push_back(v);
      }
    }
    if (columns <= 0) throw CorruptionError("\"" + path_ + "\" holds no rows");
    const int64_t feature_columns = columns - (label_index >= 0 ? 1 : 0);
    if (feature_columns < 1) throw CorruptionError("\"" + path_ + "\" has no feature column");
    const int64_t rows = static_cast<int64_t>(features.size()) / feature_columns;
    Tree out = Tree::dict({{"features", torch::tensor(features).reshape({rows, feature_columns})}});
    if (label_index >= 0) {
      torch::Tensor l = torch::tensor(labels);
      const bool integral = torch::equal(l, l.round());
      out.insert("label", integral ? l.to(torch::kLong) : l);
    }
    return out;
  }

  std::string describe() const override { return "Csv " + path_; }

 private:
  std::string path_, label_column_;
  bool header_;
};

// Random features and a label that is a fixed function of them (learnable): for tests and
// benchmarks that must not depend on files.
class Synthetic : public Source {
 public:
  explicit Synthetic(const config::Node& o)
      : n_(o.get_int("num_examples", 1024)),
        features_(o.get_int("num_features", 16)),
        classes_(o.get_int("num_classes", 4)),
        seed_(o.get_int("seed", 0)) {}

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
        "Csv", [](const config::Node& o) { return std::make_shared<Csv>(o); }, "path, label_column, header=true");
    r.add(
        "Synthetic", [](const config::Node& o) { return std::make_shared<Synthetic>(o); },
        "num_examples=1024, num_features=16, num_classes=4, seed=0");
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
