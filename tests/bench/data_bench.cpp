// Reading a folder of JPEG pictures as a training run does (decode, random-resized crop to
// 224 x 224, random flip, batches of 64): kd's ImageFolder pipeline with N worker threads
// against PyTorch's DataLoader over torchvision's ImageFolder with the same transforms and
// num_workers N, each timed over one epoch, interleaved over rounds.
//
//   build/tests/bench/data_bench [--rounds 3] [--workers 1,2] [--images 2000]
//                                [--dir /tmp/kd_data_bench] [--python python3]
//                                [--kd-transforms '[{type: RandomFlip}]']  (kd's side only)
//
// The folder is made once (by Python's PIL, from Fashion-MNIST's training pictures scaled to
// 224 x 224 RGB, JPEG quality 90, ten class folders) and reused; every timing reads it from the
// page cache. PyTorch's side needs python3 with torch and torchvision (Debian: python3-torchvision).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/config/node.h"
#include "trainer/data/pipeline.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string run(const std::string& command) {
  std::string out;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
  if (pclose(pipe) != 0) {
    std::cerr << "failed: " << command << "\n" << out;
    std::exit(1);
  }
  return out;
}

void make_folder(const fs::path& dir, int64_t images, const std::string& python) {
  const fs::path stamp = dir / ("complete_" + std::to_string(images));
  if (fs::exists(stamp)) return;
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir.string() + ".py") << R"(import gzip, os, sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
root = "/usr/share/datasets/fashion-mnist/"
with gzip.open(root + "train-images-idx3-ubyte.gz") as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
with gzip.open(root + "train-labels-idx1-ubyte.gz") as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
for i in range(n):
    d = os.path.join(out, str(y[i]))
    os.makedirs(d, exist_ok=True)
    Image.fromarray(x[i]).resize((224, 224), Image.BILINEAR).convert("RGB").save(
        os.path.join(d, "%05d.jpg" % i), quality=90)
)";
  run(python + " " + dir.string() + ".py " + dir.string() + " " + std::to_string(images));
  std::ofstream(stamp) << "";
}

double kd_rate(const fs::path& dir, int64_t workers, const std::string& transforms) {
  const auto start = Clock::now();
  kd::data::Pipeline p(kd::config::Node::parse("{type: ImageFolder, path: " + dir.string() +
                                               ", batch_size: 64, drop_remainder: false, num_epochs: 1, num_workers: " +
                                               std::to_string(workers) + ", prefetch: " + std::to_string(2 * workers) +
                                               ", transforms: " + transforms + "}"),
                       /*seed=*/0);
  int64_t seen = 0;
  while (auto batch = p.next()) seen += batch->get("image").tensor().size(0);
  return static_cast<double>(seen) / std::chrono::duration<double>(Clock::now() - start).count();
}

double torch_rate(const fs::path& dir, int64_t workers, const std::string& python) {
  const fs::path script = dir.string() + "_loader.py";
  std::ofstream(script) << R"(import sys, time
import torch, torchvision
from torchvision import transforms as T
torch.set_num_threads(1)
ds = torchvision.datasets.ImageFolder(sys.argv[1], T.Compose(
    [T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.PILToTensor()]))
start = time.perf_counter()
loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=True, num_workers=int(sys.argv[2]))
seen = sum(b[0].shape[0] for b in loader)
print(seen / (time.perf_counter() - start))
)";
  return std::stod(run(python + " " + script.string() + " " + dir.string() + " " + std::to_string(workers)));
}

std::vector<int64_t> int_list(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream s(text);
  for (std::string part; std::getline(s, part, ',');) out.push_back(std::stoll(part));
  return out;
}

std::string spread(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  char buf[96];
  std::snprintf(buf, sizeof buf, "%.3g (%.3g-%.3g)", v[v.size() / 2], v.front(), v.back());
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 3;
  int64_t images = 2000;
  std::vector<int64_t> worker_counts = {1, 2};
  fs::path dir = "/tmp/kd_data_bench";
  std::string python = "python3";
  std::string transforms = "[{type: RandomResizedCrop, size: [224, 224]}, {type: RandomFlip}]";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], value = argv[i + 1];
    if (flag == "--rounds") rounds = std::stoi(value);
    if (flag == "--images") images = std::stoll(value);
    if (flag == "--workers") worker_counts = int_list(value);
    if (flag == "--dir") dir = value;
    if (flag == "--python") python = value;
    if (flag == "--kd-transforms") transforms = value;  // kd's alone: what each transform costs
  }
  torch::set_num_threads(1);
  make_folder(dir, images, python);
  std::map<int64_t, std::vector<double>> kd, pt, ratio;
  for (int r = 0; r < rounds; ++r) {
    for (const int64_t w : worker_counts) {
      const double a = kd_rate(dir, w, transforms), b = torch_rate(dir, w, python);
      kd[w].push_back(a);
      pt[w].push_back(b);
      ratio[w].push_back(a / b);
      std::printf("round %d, %ld worker(s): kd %.0f images/s, PyTorch DataLoader %.0f, kd/PyTorch %.2f\n", r + 1,
                  static_cast<long>(w), a, b, a / b);
      std::fflush(stdout);
    }
  }
  std::printf("\n| workers | kd images/s | PyTorch images/s | kd / PyTorch |\n|---|---|---|---|\n");
  for (const int64_t w : worker_counts) {
    std::printf("| %ld | %s | %s | %s |\n", static_cast<long>(w), spread(kd[w]).c_str(), spread(pt[w]).c_str(),
                spread(ratio[w]).c_str());
  }
  if (kd.count(1) && kd.count(2)) {
    std::vector<double> scaling;
    for (int r = 0; r < rounds; ++r) scaling.push_back(kd[2][r] / kd[1][r]);
    std::printf("\nkd from 1 to 2 workers: %s x\n", spread(scaling).c_str());
  }
  return 0;
}
