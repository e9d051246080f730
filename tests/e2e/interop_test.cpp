// kd's exports in other tools' hands, and kd launch with torchrun's spellings.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>

#include "tests/e2e/helpers.h"
#include "trainer/config/experiment.h"
#include "trainer/models/model.h"

using namespace kd_e2e;

namespace {

// kd's own logits for load_export.py's input, from the workdir's model and the params of `step`.
torch::Tensor kd_logits(const fs::path& workdir, int64_t step) {
  const auto experiment = kd::config::load_experiment((workdir / "config.yaml").string(), {});
  auto model = kd::models::registry().create(experiment.child("model"));
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters(/*recurse=*/true);
  for (const auto& [name, t] : params_at(workdir, step)) params[name].copy_(t);
  model->eval();
  const torch::Tensor x = torch::linspace(0, 1, 2 * 784).reshape({2, 784});
  return model->forward(kd::Tree::dict({{"x", x}})).get("logits").tensor();
}

}  // namespace

TEST_CASE(
    "kd export --strip-prefix=params. loads into a PyTorch nn.Module, in both formats, and --overwrite replaces") {
  const fs::path workdir = fresh_dir();
  REQUIRE(run_kd("train " + small_mlp(workdir) + " --cfg.num_train_steps=30 '--cfg.evals={}'").code == 0);
  const torch::Tensor expected = kd_logits(workdir, 30);
  for (const std::string format : {"safetensors", "torch"}) {
    INFO(format);
    const fs::path out = workdir / ("model." + format);
    const Result exported = run_kd("export --workdir=" + workdir.string() + " --out=" + out.string() +
                                   " --format=" + format + " --strip-prefix=params.");
    INFO(exported.output);
    REQUIRE(exported.code == 0);
    const Result loaded = run_command(std::string(KD_PYTHON) + " " + KD_SOURCE_DIR + "/tests/e2e/load_export.py " +
                                      out.string() + " " + format);
    INFO(loaded.output);
    REQUIRE(loaded.code == 0);
    const auto rows = nlohmann::json::parse(loaded.output);
    REQUIRE(rows.size() == 2);
    // Another process, maybe other BLAS kernels: float32 sums in another order, nothing more.
    const double scale = 1 + expected.abs().max().item<double>();
    for (int64_t i = 0; i < 2; ++i) {
      REQUIRE(rows[i].size() == 10);
      for (int64_t j = 0; j < 10; ++j)
        CHECK(std::abs(rows[i][j].get<double>() - expected[i][j].item<double>()) < 1e-3 * scale);
    }
  }
  // --overwrite replaces a file; without it kd refuses.
  const fs::path out = workdir / "model.safetensors";
  const auto before = fs::last_write_time(out);
  const Result refused = run_kd("export --workdir=" + workdir.string() + " --out=" + out.string());
  CHECK(refused.code == 2);
  CHECK_THAT(refused.output, Catch::Contains("already exists") && Catch::Contains("--overwrite"));
  CHECK(fs::last_write_time(out) == before);
  const Result replaced = run_kd("export --workdir=" + workdir.string() + " --out=" + out.string() + " --overwrite");
  INFO(replaced.output);
  CHECK(replaced.code == 0);
  const std::string bytes = read_text(out);
  CHECK_THAT(bytes, Catch::Contains("\"params.layers.0.weight\""));  // no prefix stripped this time
  CHECK(fs::last_write_time(out) >= before);
  // Prefixes that strip nothing, or make two names one, are refused.
  Result r =
      run_kd("export --workdir=" + workdir.string() + " --out=" + (workdir / "a").string() + " --strip-prefix=param.");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("--strip-prefix=param. matches no tensor name (they start with params.)"));
  r = run_kd("export --workdir=" + workdir.string() + " --out=" + (workdir / "b").string() +
             " --strip-prefix=params.layers.0. --strip-prefix=params.layers.2.");
  CHECK(r.code == 2);
  CHECK_THAT(r.output, Catch::Contains("both \"weight\""));
  CHECK_FALSE(fs::exists(workdir / "a"));
  CHECK_FALSE(fs::exists(workdir / "b"));
  fs::remove_all(workdir);
}

TEST_CASE("kd launch takes torchrun's spellings: --nproc-per-node, --master-addr, --master-port") {
  const fs::path workdir = fresh_dir();
  const Result r = run_kd("launch --nproc-per-node=2 --master-addr=127.0.0.1 -- train " + small_mlp(workdir) +
                          " --cfg.num_train_steps=20 '--cfg.evals={}' --cfg.num_threads=1");
  INFO(r.output);
  CHECK(r.code == 0);
  CHECK(fs::exists(workdir / "checkpoints" / "ckpt_20"));
  CHECK_THAT(r.output, Catch::Contains("kd launch: 2 ranks") && Catch::Contains("rendezvous at 127.0.0.1:"));
  fs::remove_all(workdir);
}
