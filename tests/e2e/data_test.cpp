// Data read as batches need it: NumPy's arrays memory-mapped, batches made by worker threads,
// and a run that resumes mid-epoch with another number of workers.
#include <torch/torch.h>  // before Catch: LibTorch's glog defines its own CHECK

#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "tests/e2e/helpers.h"

using namespace kd_e2e;

namespace {

// 600 examples of 16 features in two shards, written by NumPy's np.save, and an MLP experiment
// over them (18 batches of 32 an epoch).
fs::path npy_experiment(const fs::path& dir) {
  fs::create_directories(dir / "data");
  const Result wrote =
      run_command(std::string(KD_PYTHON) +
                      " -c \"import numpy as np\n"
                      "rng = np.random.default_rng(0)\n"
                      "w = rng.normal(size=(16, 4))\n"
                      "for s in range(2):\n"
                      "    x = rng.normal(size=(300, 16)).astype(np.float32)\n"
                      "    np.save('" +
                      (dir / "data").string() +
                      "/x_%d.npy' % s, x)\n"
                      "    np.save('" +
                      (dir / "data").string() + "/y_%d.npy' % s, (x @ w).argmax(1).astype(np.int64))\n\"",
                  true);
  INFO(wrote.output);
  REQUIRE(wrote.code == 0);
  std::ofstream(dir / "exp.yaml") << "seed: 0\n"
                                     "num_train_steps: 60\n"
                                     "log_metrics_every: 20\n"
                                     "train_ds:\n"
                                     "  type: Npy\n"
                                     "  path: data\n"
                                     "  fields: {features: 'x_*.npy', label: 'y_*.npy'}\n"
                                     "  batch_size: 32\n"
                                     "  num_workers: 2\n"
                                     "  prefetch: 3\n"
                                     "model: {type: MLP, input_size: 16, hidden_sizes: [32], output_size: 4, "
                                     "inputs: {x: batch.features}}\n"
                                     "train_losses: {xent: {type: SoftmaxCrossEntropyWithIntLabels}}\n"
                                     "train_metrics: {accuracy: {type: Accuracy}}\n"
                                     "optimizer: {type: adam, learning_rate: 0.01}\n"
                                     "checkpointer: {save_interval_steps: 1000}\n"
                                     "evals: {}\n";
  return dir / "exp.yaml";
}

}  // namespace

TEST_CASE("kd trains on NumPy arrays and a run stopped mid-epoch with 2 workers resumes with 1 to the same bits") {
  const fs::path dir = fresh_dir();
  const fs::path exp = npy_experiment(dir);
  const std::string base = "train --cfg=" + exp.string() + " --cfg.num_threads=1";
  const Result whole = run_kd(base + " --cfg.workdir=" + (dir / "whole").string());
  INFO(whole.output);
  REQUIRE(whole.code == 0);
  CHECK_THAT(whole.output, Catch::Contains("Npy") && Catch::Contains("2 shards") && Catch::Contains("600 examples") &&
                               Catch::Contains("2 workers"));
  // Step 35 is inside the second epoch; the rest runs with one worker and no batches ahead.
  const Result first = run_kd(base + " --cfg.workdir=" + (dir / "split").string() + " --cfg.stop_after_steps=35");
  INFO(first.output);
  REQUIRE(first.code == 0);
  const Result rest = run_kd(base + " --cfg.workdir=" + (dir / "split").string() +
                             " --cfg.train_ds.num_workers=1 --cfg.train_ds.prefetch=0");
  INFO(rest.output);
  REQUIRE(rest.code == 0);
  CHECK(same_params(dir / "whole", dir / "split", 60));
  fs::remove_all(dir);
}

TEST_CASE("kd trains on an HDF5 file h5py wrote to the same bits as on the same arrays in .npy files") {
  const fs::path dir = fresh_dir();
  const fs::path exp = npy_experiment(dir);
  // The same 600 examples in one file: features compressed in chunks (read through libhdf5),
  // labels contiguous (read directly).
  const Result wrote =
      run_command(std::string(KD_PYTHON) +
                      " -c \"import numpy as np, h5py, glob\n"
                      "d = '" +
                      (dir / "data").string() +
                      "'\n"
                      "with h5py.File(d + '/all.h5', 'w') as f:\n"
                      "    x = np.concatenate([np.load(p) for p in sorted(glob.glob(d + '/x_*.npy'))])\n"
                      "    f.create_dataset('train/x', data=x, chunks=(1, 16), compression='gzip')\n"
                      "    f['train/y'] = np.concatenate([np.load(p) for p in sorted(glob.glob(d + '/y_*.npy'))])\n\"",
                  true);
  INFO(wrote.output);
  REQUIRE(wrote.code == 0);
  const std::string base = "train --cfg=" + exp.string() + " --cfg.num_threads=1";
  const Result npy = run_kd(base + " --cfg.workdir=" + (dir / "npy").string());
  INFO(npy.output);
  REQUIRE(npy.code == 0);
  const Result h5 = run_kd(base + " --cfg.workdir=" + (dir / "h5").string() +
                           " '--cfg.train_ds={type: Hdf5, path: " + (dir / "data/all.h5").string() +
                           ", fields: {features: /train/x, label: "
                           "/train/y}, batch_size: 32, num_workers: 2}'");
  INFO(h5.output);
  REQUIRE(h5.code == 0);
  CHECK_THAT(h5.output, Catch::Contains("features: /train/x float32(16) via HDF5, label: /train/y int64()}"));
  CHECK(same_params(dir / "npy", dir / "h5", 60));
  fs::remove_all(dir);
}
