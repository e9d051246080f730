// Checkpoint save and restore against raw disk I/O of the same bytes.
//
//   build/tests/bench/checkpoint_bench [--dir /tmp] [--rounds 3]
//
// A 5000x5000 linear layer (25M params, 100 MB) with Adam state (200 MB more) is saved with
// kd's Checkpointer (serialise, checksum, fsync, rename) and restored (verify, parse, copy into
// the model). The baseline writes the same number of bytes with write+fsync and reads them back.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/clock.h"

namespace {

std::string arg(int argc, char** argv, const char* name, const char* def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string base = arg(argc, argv, "--dir", "/tmp");
  const int rounds = std::stoi(arg(argc, argv, "--rounds", "3"));
  torch::set_num_threads(1);
  const std::string dir = base + "/kd_checkpoint_bench";
  std::filesystem::remove_all(dir);

  torch::nn::Linear model(5000, 5000);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-3));
  adam.zero_grad();
  model->forward(torch::randn({2, 5000})).sum().backward();
  adam.step();  // Adam state: exp_avg and exp_avg_sq, as large as the params

  kd::checkpoints::Checkpointer checkpointer(dir + "/checkpoints",
                                             kd::checkpoints::CheckpointerOptions{.max_to_keep = 1});
  auto fs = kd::io::posix_file_system();
  double save = 1e9, restore = 1e9, raw_write = 1e9, raw_read = 1e9;
  uint64_t bytes = 0;
  for (int r = 0; r < rounds; ++r) {
    kd::checkpoints::Snapshot snapshot;
    snapshot.step = r + 1;
    snapshot.model = model.get();
    snapshot.optimizer = &adam;
    auto t = kd::Clock::now();
    const std::string path = checkpointer.save(snapshot);
    save = std::min(save, kd::seconds_since(t));
    bytes = 0;
    for (const auto& entry : std::filesystem::directory_iterator(path))
      bytes += std::filesystem::file_size(entry.path());

    kd::checkpoints::Snapshot target;
    target.model = model.get();
    target.optimizer = &adam;
    t = kd::Clock::now();
    checkpointer.restore(path, target);
    restore = std::min(restore, kd::seconds_since(t));

    const std::string blob(bytes, 'x');
    t = kd::Clock::now();
    fs->write_file(dir + "/raw.bin", blob);
    raw_write = std::min(raw_write, kd::seconds_since(t));
    t = kd::Clock::now();
    std::unique_ptr<char[]> back;  // uninitialised memory, read() straight into it
    fs->read_file_into(dir + "/raw.bin", [&](std::size_t size) {
      back.reset(new char[size]);
      return back.get();
    });
    raw_read = std::min(raw_read, kd::seconds_since(t));
  }
  std::printf("checkpoint of %.1f MB (params 100 MB + Adam state 200 MB), best of %d rounds, 1 thread\n", bytes / 1e6,
              rounds);
  std::printf("save:    %.3f s (%.0f MB/s)   raw write+fsync of the same bytes: %.3f s (%.0f MB/s)   ratio %.2f\n",
              save, bytes / 1e6 / save, raw_write, bytes / 1e6 / raw_write, save / raw_write);
  std::printf("restore: %.3f s (%.0f MB/s)   raw read of the same bytes:        %.3f s (%.0f MB/s)   ratio %.2f\n",
              restore, bytes / 1e6 / restore, raw_read, bytes / 1e6 / raw_read, restore / raw_read);
  std::filesystem::remove_all(dir);
  return 0;
}
