// kd predict end to end, and the language-model flagship's config: the real binary on small real
// data, its output read by NumPy and checked against the eval's accuracy and the dataset's files.
#include <cmath>
#include <sstream>
#include <string>

#include "tests/e2e/helpers.h"

using namespace kd_e2e;

namespace {

// Runs `script` (Python, with NumPy) and returns its output.
std::string python(const fs::path& dir, const std::string& script) {
  std::ofstream(dir / "check.py") << script;
  const Result r = run_command(std::string(KD_PYTHON) + " " + (dir / "check.py").string(), /*with_stderr=*/true);
  INFO(r.output);
  REQUIRE(r.code == 0);
  return r.output;
}

// The value of `name` on the last line of `output` that holds `line_part` and `name`.
double logged(const std::string& output, const std::string& line_part, const std::string& name) {
  std::istringstream lines(output);
  std::string found;
  for (std::string line; std::getline(lines, line);) {
    if (line.find(line_part) != std::string::npos && line.find(name + " ") != std::string::npos) found = line;
  }
  INFO("no line with \"" << line_part << "\" and " << name);
  REQUIRE(!found.empty());
  return std::stod(found.substr(found.find(name + " ") + name.size() + 1));
}

}  // namespace

TEST_CASE("kd predict writes the eval set's predictions in order: NumPy's accuracy of them is the eval's") {
  const fs::path dir = fresh_dir();
  const fs::path workdir = dir / "w";
  const Result trained = run_kd("train " + small_mlp(workdir));
  INFO(trained.output);
  REQUIRE(trained.code == 0);
  const double eval_accuracy = logged(trained.output, "eval test at step 300", "metrics/accuracy");

  // .npy arrays, one per path, with the labels beside the logits.
  const Result npy = run_kd("predict --workdir=" + workdir.string() + " --out=" + (dir / "preds").string() +
                            " --keys=preds.logits --keys=batch.label");
  INFO(npy.output);
  REQUIRE(npy.code == 0);
  CHECK_THAT(npy.output, Catch::Contains("predict: 2000 examples of evals.test.ds with the params of step 300"));
  // JSON lines of the default paths (preds.**).
  const Result jsonl =
      run_kd("predict --workdir=" + workdir.string() + " --ds=test --out=" + (dir / "preds.jsonl").string());
  INFO(jsonl.output);
  REQUIRE(jsonl.code == 0);
  const std::string out =
      python(dir,
             "import json, numpy as np\n"
             "d = '" +
                 dir.string() +
                 "'\n"
                 "logits = np.load(d + '/preds/preds.logits.npy')\n"
                 "labels = np.load(d + '/preds/batch.label.npy')\n"
                 "assert logits.shape == (2000, 10) and logits.dtype == np.float32, logits.shape\n"
                 "assert labels.shape == (2000,) and labels.dtype == np.int64\n"
                 "meta = json.load(open(d + '/preds/predict.json'))\n"
                 "assert meta['step'] == 300 and meta['examples'] == 2000, meta\n"
                 "lines = [json.loads(l) for l in open(d + '/preds.jsonl')]\n"
                 "assert [l['index'] for l in lines] == list(range(2000))\n"
                 "assert set(lines[0]) == {'index', 'preds.logits'}\n"
                 "assert np.abs(np.array([l['preds.logits'] for l in lines]) - logits).max() < 1e-6\n"
                 "print('accuracy', (logits.argmax(1) == labels).mean())\n");
  CHECK(std::stod(out.substr(out.find("accuracy ") + 9)) == Approx(eval_accuracy).margin(1e-4));

  // The training set, in the file's order: the labels are Fashion-MNIST's first 5000.
  const Result train = run_kd("predict --workdir=" + workdir.string() +
                              " --ds=train --keys=batch.label --out=" + (dir / "train").string());
  INFO(train.output);
  REQUIRE(train.code == 0);
  python(dir,
         "import gzip, numpy as np\n"
         "raw = gzip.open('/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz').read()\n"
         "expected = np.frombuffer(raw[8:8 + 5000], dtype=np.uint8)\n"
         "got = np.load('" +
             (dir / "train" / "batch.label.npy").string() +
             "')\n"
             "assert (got == expected).all(), (got[:10], expected[:10])\n");
  fs::remove_all(dir);
}

TEST_CASE("kd predict never replaces its output unasked, and names what it cannot do") {
  const fs::path dir = fresh_dir();
  const fs::path workdir = dir / "w";
  REQUIRE(run_kd("train " + small_mlp(workdir) + " --cfg.num_train_steps=20").code == 0);
  fs::create_directories(dir / "preds");
  std::ofstream(dir / "preds" / "mine.txt") << "keep me";
  const std::string base = "predict --workdir=" + workdir.string() + " --out=" + (dir / "preds").string();
  const Result refused = run_kd(base);
  CHECK(refused.code != 0);
  CHECK_THAT(refused.output, Catch::Contains("already exists; add --overwrite"));
  CHECK(read_text(dir / "preds" / "mine.txt") == "keep me");
  const std::string other = "predict --workdir=" + workdir.string() + " --out=" + (dir / "other").string();
  const Result ds = run_kd(other + " --ds=tset");
  CHECK_THAT(ds.output,
             Catch::Contains("--ds=tset is neither an eval of the experiment nor train (did you mean test?)"));
  const Result params = run_kd(other + " --keys=params.**");
  CHECK_THAT(params.output, Catch::Contains("writes values of each example: batch.*, preds.* and interms.*"));
  CHECK_THAT(run_kd(other + " --use_ema").output, Catch::Contains("keeps no EMA of the params"));
  CHECK_THAT(run_kd(other + " --step=7").output, Catch::Contains("no checkpoint of step 7"));
  CHECK_FALSE(fs::exists(dir / "other"));
  // Nothing failed left a partial output behind, and the user's directory is as it was.
  CHECK(read_text(dir / "preds" / "mine.txt") == "keep me");
  for (const auto& e : fs::directory_iterator(dir))
    CHECK(e.path().filename().string().find("partial") == std::string::npos);
  // --overwrite replaces kd predict's own output only, never a folder of the user's.
  const Result user_dir = run_kd(base + " --overwrite");
  CHECK(user_dir.code != 0);
  CHECK_THAT(user_dir.output, Catch::Contains("a directory that kd predict did not write"));
  CHECK(read_text(dir / "preds" / "mine.txt") == "keep me");
  const std::string again = "predict --workdir=" + workdir.string() + " --out=" + (dir / "again").string();
  REQUIRE(run_kd(again + " --keys=batch.label").code == 0);
  const Result replaced = run_kd(again + " --overwrite");
  INFO(replaced.output);
  REQUIRE(replaced.code == 0);
  CHECK_FALSE(fs::exists(dir / "again" / "batch.label.npy"));
  CHECK(fs::exists(dir / "again" / "preds.logits.npy"));
  fs::remove_all(dir);
}

TEST_CASE("the language-model flagship trains a byte-level GPT and reports bits per byte") {
  const fs::path dir = fresh_dir();
  // The flagship's data, model family and metrics, made small: 1 layer, 32 wide, 30 steps.
  const Result r = run_kd("train --cfg=" + std::string(KD_SOURCE_DIR) +
                          "/configs/python_bytes_gpt.yaml --cfg.workdir=" + (dir / "w").string() +
                          " --cfg.num_train_steps=30 --cfg.log_metrics_every=10 --cfg.model.num_layers=1"
                          " --cfg.model.d_model=32 --cfg.model.num_heads=2 --cfg.model.block_size=32"
                          " --cfg.train_ds.seq_len=32 --cfg.evals.validation.ds.seq_len=32"
                          " --cfg.evals.validation.num_batches=3 '--cfg.evals.validation.run={type: Final}'"
                          " --cfg.optimizer.learning_rate.warmup_steps=5 --cfg.optimizer.learning_rate.decay_steps=30");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Catch::Contains("split train"));
  const double first = logged(r.output, " step 10 ", "losses/xent");
  const double last = logged(r.output, " step 30 ", "losses/xent");
  CHECK(first < std::log(256.0) + 0.1);  // about uniform over the 256 bytes at the start
  CHECK(last < first);
  // Bits per byte: the validation cross-entropy in nats over ln 2.
  const double val_loss = logged(r.output, "eval validation at step 30", "losses/xent");
  const double bits = logged(r.output, "eval validation at step 30", "metrics/bits_per_byte");
  CHECK(bits == Approx(val_loss / std::log(2.0)).epsilon(2e-3));
  fs::remove_all(dir);
}
