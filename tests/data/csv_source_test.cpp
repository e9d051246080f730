#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include <torch/torch.h>

#include "tests/temp_dir.h"
#include "trainer/common/error.h"
#include "trainer/config/experiment.h"
#include "trainer/data/csv_source_internal.h"
#include "trainer/data/pipeline.h"

namespace fs = std::filesystem;
using kd::Tree;
using kd::config::Node;
using kd::data::Pipeline;

namespace {

// The whole table of `csv` (written to a file) under the Csv options `options`.
struct Loaded {
  Tree examples;
  std::vector<std::string> warnings;
  std::string description;
};
Loaded load_csv(const std::string& csv, const std::string& options) {
  const fs::path dir = kd::testing::fresh_dir("kd_csv_test_");
  fs::create_directories(dir);
  std::ofstream(dir / "t.csv") << csv;
  const auto cleanup = [&] { fs::remove_all(dir); };
  try {
    kd::data::CsvSource source(Node::parse("{path: " + (dir / "t.csv").string() + options + "}", "exp.yaml"));
    Loaded out{source.load(), source.warnings(), source.describe()};
    cleanup();
    return out;
  } catch (...) {
    cleanup();
    throw;
  }
}

torch::Tensor get(const Loaded& l, const char* key) { return l.examples.get(key).tensor(); }

}  // namespace

TEST_CASE("Csv: every column but the label is batch.features; whole-number labels are class indices") {
  const Loaded l = load_csv("a,b,y\n1,2,0\n3,4.5,1\n", ", label_column: y");
  CHECK(get(l, "features").equal(torch::tensor({{1.0f, 2.0f}, {3.0f, 4.5f}})));
  CHECK(get(l, "label").equal(torch::tensor({0, 1})));
  CHECK(get(l, "label").scalar_type() == torch::kLong);
  // A regression target stays float; no label_column: features only.
  CHECK(get(load_csv("a,y\n1,0.5\n2,1.5\n", ", label_column: y"), "label").equal(torch::tensor({0.5f, 1.5f})));
  CHECK_FALSE(load_csv("a,y\n1,0\n", "").examples.find("label"));
  // By index: 0 is the first column, -1 the last; without a header too.
  CHECK(get(load_csv("7,1,2\n8,3,4\n", ", header: false, label_column: 0"), "label").equal(torch::tensor({7, 8})));
  CHECK(get(load_csv("a,b,y\n1,2,5\n", ", label_column: -1"), "label").equal(torch::tensor({5})));
  CHECK_THROWS_WITH(load_csv("a,y\n1,0\n", ", label_column: 2"),
                    Catch::Contains("label_column 2 is outside the 2 columns") && Catch::Contains("-1 the last"));
  CHECK_THROWS_WITH(load_csv("1,0\n", ", header: false, label_column: y"),
                    Catch::Contains("header is false; give its index"));
  CHECK_THROWS_WITH(load_csv("a,b\n1,0\n", ", label_column: lable"),
                    Catch::Contains("has no column \"lable\"") && Catch::Contains("names: a, b"));
  CHECK_THROWS_WITH(load_csv("label,b\n1,0\n", ", label_column: lable"), Catch::Contains("Did you mean \"label\"?"));
}

TEST_CASE("Csv: class indices are checked at load, by line: negative, >= num_classes, or the ignore_label") {
  const std::string csv = "a,y\n1,0\n2,-100\n3,2\n";
  CHECK_THROWS_WITH(load_csv(csv, ", label_column: y"),
                    Catch::Contains("t.csv:3: column \"y\" (index 1) is -100, not a class index") &&
                        Catch::Contains("ignore_label: -100") && Catch::Contains("label_dtype: float32"));
  const Loaded ignored = load_csv(csv, ", label_column: y, ignore_label: -100");
  CHECK(get(ignored, "label").equal(torch::tensor({0, -100, 2})));
  CHECK_THROWS_WITH(load_csv(csv, ", label_column: y, ignore_label: -100, num_classes: 2"),
                    Catch::Contains("t.csv:4: column \"y\" (index 1) is 2, not a class index in [0, 2)"));
  CHECK(get(load_csv(csv, ", label_column: y, ignore_label: -100, num_classes: 3"), "label").size(0) == 3);
  // A whole-number regression target: said so, kept as float32.
  const Loaded target = load_csv(csv, ", label_column: y, label_dtype: float32");
  CHECK(get(target, "label").equal(torch::tensor({0.0f, -100.0f, 2.0f})));
  CHECK_THROWS_WITH(load_csv("a,y\n1,0\n2,1.5\n", ", label_column: y, label_dtype: int64"),
                    Catch::Contains("t.csv:3: column \"y\" (index 1) is 1.5") && Catch::Contains("not a whole number"));
  CHECK_THROWS_WITH(load_csv(csv, ", label_column: y, label_dtype: float32, num_classes: 3"),
                    Catch::Contains("leave out num_classes"));
}

TEST_CASE("Csv: word labels map to indices in sorted order, or in the order of classes") {
  const std::string csv = "x,species\n1,virginica\n2,setosa\n3,versicolor\n4,setosa\n";
  const Loaded sorted = load_csv(csv, ", label_column: species");
  CHECK(get(sorted, "label").equal(torch::tensor({2, 0, 1, 0})));
  CHECK_THAT(sorted.description, Catch::Contains("classes setosa=0, versicolor=1, virginica=2"));
  const Loaded given = load_csv(csv, ", label_column: species, classes: [virginica, versicolor, setosa]");
  CHECK(get(given, "label").equal(torch::tensor({0, 2, 1, 2})));
  CHECK_THROWS_WITH(load_csv(csv, ", label_column: species, classes: [setosa, versicolor]"),
                    Catch::Contains("t.csv:2: column \"species\" (index 1): the label \"virginica\" is not one of "
                                    "classes (setosa, versicolor)"));
  CHECK_THROWS_WITH(load_csv(csv, ", label_column: species, classes: [a, a]"),
                    Catch::Contains("classes must list each label once"));
}

TEST_CASE("Csv: bad cells and rows are reported by line and column") {
  CHECK_THROWS_WITH(load_csv("a,b,y\n1,x,0\n", ", label_column: y"),
                    Catch::Contains("t.csv:2: column \"b\" (index 1) is not a number: \"x\""));
  CHECK_THROWS_WITH(load_csv("a,b,y\n1,2,0\n1,,0\n", ", label_column: y"),
                    Catch::Contains("t.csv:3: column \"b\" (index 1) is empty"));
  CHECK_THROWS_WITH(load_csv("1,2\n3,4,5\n", ", header: false"),
                    Catch::Contains("t.csv:2: 3 columns, but the first row has 2"));
  CHECK_THROWS_WITH(load_csv("a,y\n1,0,5\n", ", label_column: y"),
                    Catch::Contains("t.csv:2: 3 columns, but the header (line 1) names 2"));
  CHECK_THROWS_WITH(load_csv("y\n0\n1\n", ", label_column: y"),
                    Catch::Contains("no feature column besides the label column"));
  CHECK_THROWS_WITH(load_csv("a,y\n", ", label_column: y"), Catch::Contains("holds no rows below its header"));
  // Windows line ends, blanks and quotes around the names: the column is found.
  CHECK(get(load_csv("\"a\", y \r\n1,0\r\n2,1\r\n", ", label_column: y"), "features").sizes() ==
        torch::IntArrayRef({2, 1}));  // A byte-order mark (as Excel writes UTF-8) reads as if it were not there.
  CHECK(get(load_csv("\xEF\xBB\xBF"
                     "a,y\n1,0\n2,1\n",
                     ", label_column: y"),
            "features")
            .sizes() == torch::IntArrayRef({2, 1}));
  // Non-finite cells are refused at load, by line and column (not as a non-finite loss later).
  CHECK_THROWS_WITH(load_csv("a,b,y\n1,2,0\n1,nan,1\n", ", label_column: y"),
                    Catch::Contains("t.csv:3: column \"b\" (index 1) is \"nan\", not a finite number"));
  CHECK_THROWS_WITH(load_csv("a,y\n-inf,0\n", ", label_column: y"),
                    Catch::Contains("t.csv:2: column \"a\" (index 0) is \"-inf\", not a finite number"));
  CHECK(std::isnan(
      get(load_csv("a,y\nnan,0\n", ", label_column: y, allow_non_finite: true"), "features")[0][0].item<float>()));
}

TEST_CASE("Csv: pandas' unnamed index column is read as a feature, with a warning") {
  const Loaded l = load_csv(",a,y\n0,1.5,1\n1,2.5,0\n", ", label_column: y");
  CHECK(get(l, "features").sizes() == torch::IntArrayRef({2, 2}));
  REQUIRE(l.warnings.size() == 1);
  CHECK_THAT(l.warnings.front(), Catch::Contains("the first column has no name") && Catch::Contains("index=False"));
  CHECK(load_csv("a,y\n1,0\n", ", label_column: y").warnings.empty());
}

TEST_CASE("Csv: split train/test divides one file by a seeded shuffle, the same on every machine") {
  // The rows of seed 0 and 7 for 10 rows and test_fraction 0.3, from an independent
  // implementation of the documented shuffle (splitmix64 and Fisher-Yates, Python).
  CHECK(kd::data::split_rows(10, 0.3, 0, true) == std::vector<int64_t>{2, 3, 6});
  CHECK(kd::data::split_rows(10, 0.3, 0, false) == std::vector<int64_t>{0, 1, 4, 5, 7, 8, 9});
  CHECK(kd::data::split_rows(10, 0.3, 7, true) == std::vector<int64_t>{1, 5, 8});
  std::string csv = "x,y\n";
  for (int i = 0; i < 40; ++i) csv += std::to_string(i) + "," + (i % 2 ? "odd" : "even") + "\n";
  const auto rows = [](const Loaded& l) {
    std::set<int64_t> out;
    for (int64_t i = 0; i < get(l, "features").size(0); ++i) out.insert(get(l, "features")[i][0].item<int64_t>());
    return out;
  };
  const Loaded train = load_csv(csv, ", label_column: y, split: train, test_fraction: 0.25, split_seed: 3");
  const Loaded test = load_csv(csv, ", label_column: y, split: test, test_fraction: 0.25, split_seed: 3");
  const auto a = rows(train), b = rows(test);
  CHECK(a.size() == 30);
  CHECK(b.size() == 10);
  std::set<int64_t> both(a.begin(), a.end());
  both.insert(b.begin(), b.end());
  CHECK(both.size() == 40);  // disjoint, and together the file
  // Word labels map the same in both splits (sorted over the whole file).
  CHECK_THAT(train.description, Catch::Contains("even=0, odd=1"));
  CHECK_THAT(test.description, Catch::Contains("even=0, odd=1"));
  CHECK(rows(load_csv(csv, ", label_column: y, split: test, test_fraction: 0.25, split_seed: 4")) != b);
  CHECK_THROWS_WITH(load_csv(csv, ", split: validation"), Catch::Contains("split must be all, train or test"));
  CHECK_THROWS_WITH(load_csv(csv, ", test_fraction: 0.5"), Catch::Contains("for split: train or split: test"));
  CHECK_THROWS_WITH(load_csv("x\n1\n", ", split: test, test_fraction: 0.1"), Catch::Contains("holds no rows"));
}

TEST_CASE("path keys are relative to the experiment file that writes them, or to the current directory") {
  const fs::path dir = kd::testing::fresh_dir("kd_paths_test_");
  fs::create_directories(dir / "base");
  std::ofstream(dir / "base" / "b.yaml") << "train_ds: {type: Csv, path: data/train.csv}\n"
                                         << "model: {type: TorchScript, path: /abs/model.pt}\n";
  std::ofstream(dir / "exp.yaml") << "base: base/b.yaml\nevals: {test: {ds: {type: Csv, path: ../test.csv}}}\n";
  const Node e = kd::config::load_experiment((dir / "exp.yaml").string(), {});
  CHECK(e.child("train_ds").get_string("path") == (dir / "base" / "data" / "train.csv").string());
  CHECK(e.child("model").get_string("path") == "/abs/model.pt");
  CHECK(e.child("evals").child("test").child("ds").get_string("path") == (dir.parent_path() / "test.csv").string());
  const Node o = kd::config::load_experiment((dir / "exp.yaml").string(), {{"train_ds.path", "mine.csv"}});
  CHECK(o.child("train_ds").get_string("path") == (fs::current_path() / "mine.csv").string());
  // The saved experiment holds the absolute paths: it loads the same from the workdir.
  std::ofstream(dir / "saved.yaml") << e.to_yaml();
  const Node saved = kd::config::load_experiment((dir / "saved.yaml").string(), {});
  CHECK(saved.child("train_ds").get_string("path") == (dir / "base" / "data" / "train.csv").string());
  fs::remove_all(dir);
}
