// `kd train` end to end against the loops a LibTorch user writes by hand and against the same loop
// in PyTorch's Python, on the same data and model, each a fresh process, interleaved over rounds,
// and against the time of the step's matrix products alone.
//
//   build/tests/bench/train_bench [--rounds 3] [--kd-runs 2] [--cases flagship,tiny,cnn]
//                                 [--threads 1,2] [--scale 1.0] [--python python3]
//
// Cases:
//   flagship  the MLP 784-512-256-10 on Fashion-MNIST's training set, Adam 1e-3, batch 128,
//             ValueRange [0, 255] -> [0, 1], softmax cross-entropy and accuracy; 1000 steps
//   tiny      an MLP 16-64-64-4 on kd's Synthetic data (4096 examples), Adam 1e-3, batch 32,
//             the same loss and metric; 20000 steps
//   cnn       configs/fashion_mnist_cnn.yaml's model (conv 3x3 32 and 64 channels, each with
//             BatchNorm, ReLU and max-pool 2x2; dropout 0.25, dense 128, dropout 0.25, dense 10),
//             its augmentation (pad 2 and a random 28x28 crop, a random left-right flip, per
//             image) and its schedule (warm-up 200 steps to 2e-3, cosine to 0); 400 steps
// Programs:
//   kd        `kd train` on the experiment (a checkpoint at the end, its writers, the accuracy)
//   lean      the loop a LibTorch user tunes: the data converted to float once, up front; per
//             step `index_select`, forward, loss, backward, torch::optim::Adam; the loss summed on
//             the device and read once per log interval; no accuracy
//   hand      the loop as first written: the batch converted to float each step, the loss and
//             the accuracy summed on the device and read once per log interval
//   python    the hand loop in PyTorch's Python
//   bound     the step's matrix products alone (3 forward, 5 backward, LibTorch's own kernels on
//             preallocated outputs): no step can be faster (the MLP cases only)
// Every program shuffles each epoch and logs every 200 steps. Two figures per program: the
// training loop's steps/s (kd: the sum of its log intervals; the loops: timed inside them) and the
// whole process's (start-up, data loading, kd's checkpoint included; not for Python, whose
// interpreter start is not the loop's). Peak RSS is the process's ru_maxrss. The Python loop needs
// a python3 with torch (Debian: apt-get install python3-torch, the same LibTorch and OpenBLAS as
// kd's); without one its columns are left out. The loops and Python run with the allocator
// thresholds kd sets for itself (MALLOC_MMAP_THRESHOLD_ 32 MiB, MALLOC_TRIM_THRESHOLD_ 2 GiB: freed
// memory kept for reuse), so that the allocator is not among the differences measured. kd runs
// --kd-runs times per round (its slowest run is compared with the lean loop's median, and beside it
// the lean loop's own slowest run and the bound's, with their medians: the machine's spread).
//
// `train_bench --hand-loop CASE|--lean-loop CASE --threads N --steps N` runs one loop alone;
// `train_bench --gemm-bound CASE --threads N` times the matrix products.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/config/node.h"
#include "trainer/data/source.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int64_t kLogEvery = 200;

struct Case {
  std::string name;
  int64_t steps;
  int64_t batch_size;
  std::vector<int64_t> sizes;       // input, hidden..., output
  std::vector<std::string> source;  // kd's data source: its keys, "key: value"
  bool scale_images;                // ValueRange [0, 255] -> [0, 1] on the uint8 images
  bool cnn = false;                 // the flagship CNN instead of an MLP of `sizes`
};

// The CNN case's augmentation and schedule (configs/fashion_mnist_cnn.yaml's).
constexpr int64_t kCropPadding = 2;
constexpr double kPeakLearningRate = 2e-3;
constexpr int64_t kWarmupSteps = 200;

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"flagship", 1000, 128, {784, 512, 256, 10}, {"type: FashionMnist", "split: train"}, true},
      {"tiny",
       20000,
       32,
       {16, 64, 64, 4},
       {"type: Synthetic", "num_examples: 4096", "num_features: 16", "num_classes: 4"},
       false},
      {"cnn", 400, 128, {784, 10}, {"type: FashionMnist", "split: train"}, true, /*cnn=*/true},
  };
  return all;
}

const Case& find_case(const std::string& name) {
  for (const auto& c : cases()) {
    if (c.name == name) return c;
  }
  std::fprintf(stderr, "train_bench: no case named %s (flagship, tiny, cnn)\n", name.c_str());
  std::exit(2);
}

// The CNN case's schedule: optax's warmup_cosine_decay_schedule(0, peak, warmup, decay_steps), as
// kd's WarmupCosineDecay; decay_steps is the run's length.
int64_t decay_steps(int64_t steps) { return std::max(steps, kWarmupSteps + 1); }

double learning_rate(const Case& c, int64_t step, int64_t steps) {
  if (!c.cnn) return 1e-3;
  if (step < kWarmupSteps) return kPeakLearningRate * static_cast<double>(step) / static_cast<double>(kWarmupSteps);
  const double t = static_cast<double>(step - kWarmupSteps) / static_cast<double>(decay_steps(steps) - kWarmupSteps);
  return kPeakLearningRate * 0.5 * (1 + std::cos(M_PI * std::min(1.0, t)));
}

std::string sizes_yaml(const std::vector<int64_t>& v, std::size_t from, std::size_t to) {
  std::string out = "[";
  for (std::size_t i = from; i < to; ++i) out += (i > from ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

std::string kd_experiment(const Case& c, int64_t steps) {
  std::ostringstream y;
  y << "seed: 0\n"
    << "num_train_steps: " << steps << "\n"
    << "log_metrics_every: " << kLogEvery << "\n"
    << "checkpointer: {save_interval_steps: 0}\n"
    << "train_ds:\n";
  for (const auto& key : c.source) y << "  " << key << "\n";
  y << "  batch_size: " << c.batch_size << "\n";
  if (c.scale_images) y << "  transforms:\n    - {type: ValueRange, key: image, in_vrange: [0, 255], vrange: [0, 1]}\n";
  if (c.cnn) {
    y << "    - {type: RandomCrop, key: image, size: [28, 28], padding: " << kCropPadding << "}\n"
      << "    - {type: RandomFlip, key: image}\n"
      << "model: {type: CNN, input_shape: [28, 28, 1], channels: [32, 64], hidden_size: 128, dropout: 0.25,\n"
      << "        output_size: 10, inputs: {x: batch.image}}\n";
  } else {
    y << "model:\n"
      << "  type: MLP\n"
      << "  input_size: " << c.sizes.front() << "\n"
      << "  hidden_sizes: " << sizes_yaml(c.sizes, 1, c.sizes.size() - 1) << "\n"
      << "  output_size: " << c.sizes.back() << "\n"
      << "  inputs: {x: batch.image}\n";
  }
  y << "train_losses:\n"
    << "  xent: {type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits, labels: batch.label}\n"
    << "train_metrics:\n"
    << "  accuracy: {type: Accuracy, logits: preds.logits, labels: batch.label}\n";
  if (c.cnn) {
    y << "optimizer: {type: adam, learning_rate: {type: WarmupCosineDecay, peak_value: " << kPeakLearningRate
      << ", warmup_steps: " << kWarmupSteps << ", decay_steps: " << decay_steps(steps) << "}}\n";
  } else {
    y << "optimizer: {type: adam, learning_rate: 1e-3}\n";
  }
  return y.str();
}

std::string source_yaml(const Case& c) {
  std::string out = "{";
  for (const auto& key : c.source) out += (out.size() > 1 ? ", " : "") + key;
  return out + "}";
}

// ---- the hand-written loops ------------------------------------------------------------------

torch::nn::Sequential make_net(const Case& c) {
  torch::nn::Sequential net;
  if (c.cnn) {
    int64_t in = 1;
    for (const int64_t channels : {32, 64}) {
      net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, channels, 3).padding(1).bias(false)));
      net->push_back(torch::nn::BatchNorm2d(channels));
      net->push_back(torch::nn::ReLU());
      net->push_back(torch::nn::MaxPool2d(2));
      in = channels;
    }
    net->push_back(torch::nn::Flatten());
    net->push_back(torch::nn::Dropout(0.25));
    net->push_back(torch::nn::Linear(64 * 7 * 7, 128));
    net->push_back(torch::nn::ReLU());
    net->push_back(torch::nn::Dropout(0.25));
    net->push_back(torch::nn::Linear(128, 10));
    return net;
  }
  for (std::size_t i = 0; i + 1 < c.sizes.size(); ++i) {
    net->push_back(torch::nn::Linear(c.sizes[i], c.sizes[i + 1]));
    if (i + 2 < c.sizes.size()) net->push_back(torch::nn::ReLU());
  }
  return net;
}

// Pads [B, H, W] images by kCropPadding zeros, then takes a random HxW window of each, flipped
// left-right with probability 1/2: one gather for the whole batch.
torch::Tensor random_crop_flip(const torch::Tensor& x) {
  const int64_t b = x.size(0), h = x.size(1), w = x.size(2);
  const torch::Tensor padded = torch::constant_pad_nd(x, {kCropPadding, kCropPadding, kCropPadding, kCropPadding});
  const torch::Tensor top = torch::randint(2 * kCropPadding + 1, {b, 1, 1}, torch::kLong);
  const torch::Tensor left = torch::randint(2 * kCropPadding + 1, {b, 1, 1}, torch::kLong);
  const torch::Tensor flip = torch::rand({b, 1, 1}).lt(0.5);
  const torch::Tensor rows = torch::arange(h).view({1, h, 1}) + top;
  const torch::Tensor columns = torch::arange(w).view({1, 1, w});
  const torch::Tensor cols = torch::where(flip, (w - 1) - columns, columns) + left;
  return padded.index({torch::arange(b).view({b, 1, 1}), rows, cols});
}

// The model's input from a batch of float images: the MLP's [B, features]; the CNN's augmented
// [B, 1, 28, 28].
torch::Tensor model_input(const Case& c, const torch::Tensor& x) {
  if (!c.cnn) return x.reshape({x.size(0), -1});
  return random_crop_flip(x.reshape({x.size(0), 28, 28})).unsqueeze(1);
}

void set_learning_rate(torch::optim::Adam& adam, double lr) {
  for (auto& group : adam.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

// The loop as first written: the batch converted each step, the loss and the accuracy.
int hand_loop(const Case& c, int threads, int64_t steps) {
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  // The data as kd's source reads it (the decoding of IDX files is not what is compared).
  const kd::Tree examples = kd::data::source_registry().create(kd::config::Node::parse(source_yaml(c)))->load();
  const torch::Tensor images = examples.at("image").tensor();
  const torch::Tensor labels = examples.at("label").tensor();
  const int64_t n = images.size(0);
  const int64_t per_epoch = n / c.batch_size;
  torch::nn::Sequential net = make_net(c);
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(learning_rate(c, 0, steps)));

  const auto start = Clock::now();
  torch::Tensor order, loss_sum, correct;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t index = step % per_epoch;
    if (index == 0) order = torch::randperm(n);
    const torch::Tensor rows = order.slice(0, index * c.batch_size, (index + 1) * c.batch_size);
    torch::Tensor x = images.index_select(0, rows);
    x = c.scale_images ? x.to(torch::kFloat).div_(255) : x;
    const torch::Tensor y = labels.index_select(0, rows);

    if (c.cnn) set_learning_rate(adam, learning_rate(c, step, steps));
    adam.zero_grad();
    const torch::Tensor logits = net->forward(model_input(c, x));
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
    loss.backward();
    adam.step();
    {
      torch::NoGradGuard no_grad;
      const torch::Tensor right = (logits.argmax(-1) == y).sum();
      loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
      correct = correct.defined() ? correct + right : right;
    }
    if ((step + 1) % kLogEvery == 0 || step + 1 == steps) {
      const int64_t logged = (step + 1) % kLogEvery == 0 ? kLogEvery : (step + 1) % kLogEvery;
      std::printf("step %lld: loss %.4f accuracy %.4f\n", static_cast<long long>(step + 1),
                  loss_sum.item<double>() / static_cast<double>(logged),
                  correct.item<double>() / static_cast<double>(logged * c.batch_size));
      loss_sum = torch::Tensor();
      correct = torch::Tensor();
    }
  }
  std::printf("loop_seconds %.6f\n", std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

// The lean loop: the data converted once, the loss alone, read once per log interval.
int lean_loop(const Case& c, int threads, int64_t steps) {
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  const kd::Tree examples = kd::data::source_registry().create(kd::config::Node::parse(source_yaml(c)))->load();
  torch::Tensor images = examples.at("image").tensor();
  images = c.scale_images ? images.to(torch::kFloat).div_(255) : images.to(torch::kFloat);
  if (!c.cnn) images = images.reshape({images.size(0), -1});
  const torch::Tensor labels = examples.at("label").tensor();
  const int64_t n = images.size(0);
  const int64_t per_epoch = n / c.batch_size;
  torch::nn::Sequential net = make_net(c);
  torch::optim::Adam adam(net->parameters(), torch::optim::AdamOptions(learning_rate(c, 0, steps)));

  const auto start = Clock::now();
  torch::Tensor order, loss_sum;
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t index = step % per_epoch;
    if (index == 0) order = torch::randperm(n);
    const torch::Tensor rows = order.slice(0, index * c.batch_size, (index + 1) * c.batch_size);
    const torch::Tensor x = images.index_select(0, rows);
    const torch::Tensor y = labels.index_select(0, rows);
    if (c.cnn) set_learning_rate(adam, learning_rate(c, step, steps));
    adam.zero_grad();
    const torch::Tensor loss = torch::nn::functional::cross_entropy(net->forward(c.cnn ? model_input(c, x) : x), y);
    loss.backward();
    adam.step();
    loss_sum = loss_sum.defined() ? loss_sum + loss.detach() : loss.detach();
    if ((step + 1) % kLogEvery == 0 || step + 1 == steps) {
      const int64_t logged = (step + 1) % kLogEvery == 0 ? kLogEvery : (step + 1) % kLogEvery;
      std::printf("step %lld: loss %.4f\n", static_cast<long long>(step + 1),
                  loss_sum.item<double>() / static_cast<double>(logged));
      loss_sum = torch::Tensor();
    }
  }
  std::printf("loop_seconds %.6f\n", std::chrono::duration<double>(Clock::now() - start).count());
  return 0;
}

// The seconds of one step's matrix products: per layer the forward product (addmm, with the
// bias, as Linear), the weight's gradient (mm), and the input's gradient but for the first
// layer (mm), on preallocated outputs; the median of 7 timings of enough steps for 0.3 s each.
int gemm_bound(const Case& c, int threads) {
  torch::set_num_threads(threads);
  const int64_t B = c.batch_size;
  std::vector<torch::Tensor> x, w, b, y, dy, dw, dx;
  for (std::size_t i = 0; i + 1 < c.sizes.size(); ++i) {
    const int64_t in = c.sizes[i], out = c.sizes[i + 1];
    x.push_back(torch::randn({B, in}));
    w.push_back(torch::randn({out, in}));
    b.push_back(torch::randn({out}));
    y.push_back(torch::empty({B, out}));
    dy.push_back(torch::randn({B, out}));
    dw.push_back(torch::empty({out, in}));
    dx.push_back(torch::empty({B, in}));
  }
  const auto step = [&] {
    for (std::size_t i = 0; i < x.size(); ++i) torch::addmm_out(y[i], b[i], x[i], w[i].t());
    for (std::size_t i = x.size(); i-- > 0;) {
      torch::mm_out(dw[i], dy[i].t(), x[i]);
      if (i > 0) torch::mm_out(dx[i], dy[i], w[i]);
    }
  };
  for (int i = 0; i < 20; ++i) step();
  int64_t reps = 1;
  for (;;) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < reps; ++i) step();
    if (std::chrono::duration<double>(Clock::now() - start).count() > 0.3) break;
    reps *= 2;
  }
  std::vector<double> times;
  for (int t = 0; t < 7; ++t) {
    const auto start = Clock::now();
    for (int64_t i = 0; i < reps; ++i) step();
    times.push_back(std::chrono::duration<double>(Clock::now() - start).count() / static_cast<double>(reps));
  }
  std::sort(times.begin(), times.end());
  std::printf("gemm_seconds %.9f\n", times[times.size() / 2]);
  return 0;
}

// ---- the Python loop --------------------------------------------------------------------------

// The same loop in PyTorch's Python; prints "loop_seconds S" (its loop alone).
constexpr const char* kPythonLoop = R"PY(
import gzip, math, sys, time
import numpy as np
import torch

case, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
padding, peak, warmup = int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])  # the CNN case's
torch.set_num_threads(threads)
torch.manual_seed(0)
cnn = case == "cnn"
if case in ("flagship", "cnn"):
    root = "/usr/share/datasets/fashion-mnist/"
    with gzip.open(root + "train-images-idx3-ubyte.gz") as f:
        images = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).copy())
    with gzip.open(root + "train-labels-idx1-ubyte.gz") as f:
        labels = torch.from_numpy(np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64))
    sizes, batch_size, scale = [784, 512, 256, 10], 128, True
else:
    images = torch.randn(4096, 16)
    w = torch.arange(64, dtype=torch.float32).reshape(16, 4).sin()
    labels = (images @ w).argmax(1)
    sizes, batch_size, scale = [16, 64, 64, 4], 32, False

layers = []
for i in range(len(sizes) - 1):
    layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
    if i + 2 < len(sizes):
        layers.append(torch.nn.ReLU())
net = torch.nn.Sequential(*layers)
if cnn:
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25), nn.Linear(128, 10))
decay = max(steps, warmup + 1)

def learning_rate(step):
    if not cnn:
        return 1e-3
    if step < warmup:
        return peak * step / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (decay - warmup))))

def crop_flip(x):  # [B, H, W]: a random HxW window of each image padded by `padding`, flipped at random
    b, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    top = torch.randint(2 * padding + 1, (b, 1, 1))
    left = torch.randint(2 * padding + 1, (b, 1, 1))
    flip = torch.rand(b, 1, 1) < 0.5
    columns = torch.arange(w).view(1, 1, w)
    cols = torch.where(flip, (w - 1) - columns, columns) + left
    return padded[torch.arange(b).view(b, 1, 1), torch.arange(h).view(1, h, 1) + top, cols]

adam = torch.optim.Adam(net.parameters(), lr=learning_rate(0))
n = images.shape[0]
per_epoch = n // batch_size
loss_sum = correct = None
start = time.perf_counter()
for step in range(steps):
    index = step % per_epoch
    if index == 0:
        order = torch.randperm(n)
    rows = order[index * batch_size:(index + 1) * batch_size]
    x = images.index_select(0, rows)
    if scale:
        x = x.float().div_(255)
    y = labels.index_select(0, rows)
    if cnn:
        for group in adam.param_groups:
            group["lr"] = learning_rate(step)
    adam.zero_grad()
    logits = net(crop_flip(x.reshape(-1, 28, 28)).unsqueeze(1) if cnn else x.reshape(x.shape[0], -1))
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    adam.step()
    with torch.no_grad():
        right = (logits.argmax(-1) == y).sum()
        loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
        correct = right if correct is None else correct + right
    if (step + 1) % 200 == 0 or step + 1 == steps:
        logged = 200 if (step + 1) % 200 == 0 else (step + 1) % 200
        print(f"step {step + 1}: loss {loss_sum.item() / logged:.4f} accuracy {correct.item() / (logged * batch_size):.4f}")
        loss_sum = correct = None
print(f"loop_seconds {time.perf_counter() - start}")
)PY";

// ---- the driver -------------------------------------------------------------------------------

struct Run {
  double seconds = 0;  // wall clock of the whole process
  double peak_rss_mb = 0;
  std::string output;  // its stdout and stderr
};

Run run_process(const std::vector<std::string>& argv, const fs::path& log,
                const std::map<std::string, std::string>& env = {}) {
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid < 0) {
    std::perror("fork");
    std::exit(1);
  }
  if (pid == 0) {
    std::FILE* out = std::fopen(log.c_str(), "w");
    if (out) {
      dup2(fileno(out), 1);
      dup2(fileno(out), 2);
    }
    for (const auto& [key, value] : env) setenv(key.c_str(), value.c_str(), 1);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::perror("exec");
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  wait4(pid, &status, 0, &usage);
  Run run{.seconds = std::chrono::duration<double>(Clock::now() - start).count(),
          .peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0};
  std::ifstream in(log);
  run.output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "train_bench: %s failed (status %d):\n%s\n", argv[0].c_str(), status, run.output.c_str());
    std::exit(1);
  }
  return run;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

std::string flag(int argc, char** argv, const char* name, const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return def;
}

bool python_has_torch(const std::string& python, const fs::path& dir) {
  if (python.empty()) return false;
  const pid_t pid = fork();
  if (pid == 0) {
    std::FILE* out = std::fopen((dir / "python-check.txt").c_str(), "w");
    if (out) {
      dup2(fileno(out), 1);
      dup2(fileno(out), 2);
    }
    execlp(python.c_str(), python.c_str(), "-c", "import torch", static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// "loop_seconds S" of a loop's output.
double loop_seconds(const std::string& output) {
  const auto at = output.rfind("loop_seconds ");
  return at == std::string::npos ? 0 : std::stod(output.substr(at + 13));
}

// "gemm_seconds S" of --gemm-bound's output.
double gemm_seconds(const std::string& output) {
  const auto at = output.rfind("gemm_seconds ");
  return at == std::string::npos ? 0 : std::stod(output.substr(at + 13));
}

// kd's training loop: the sum of its log intervals (steps / steps_per_sec of each).
double kd_loop_seconds(const std::string& output, int64_t steps) {
  double seconds = 0;
  int64_t done = 0;
  for (std::size_t at = output.find("perf_stats/steps_per_sec "); at != std::string::npos;
       at = output.find("perf_stats/steps_per_sec ", at + 1)) {
    const int64_t interval = std::min(kLogEvery, steps - done);
    seconds += static_cast<double>(interval) / std::stod(output.substr(at + 25));
    done += interval;
  }
  return seconds;
}

}  // namespace

struct Series {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  bool empty() const { return v.empty(); }
  double med() const { return median(v); }
  double min() const { return *std::min_element(v.begin(), v.end()); }
  double max() const { return *std::max_element(v.begin(), v.end()); }
  // "310.2 (290.1-330.0)"
  std::string text(const char* format) const {
    if (v.empty()) return "-";
    char buffer[96];
    const std::string f = std::string(format) + " (" + format + "-" + format + ")";
    std::snprintf(buffer, sizeof buffer, f.c_str(), med(), min(), max());
    return buffer;
  }
};

// Every argument is "--name value" with a known name; anything else prints the usage and exits 2
// (a mistyped flag must not run a different benchmark than the one asked for).
bool arguments_known(int argc, char** argv) {
  static const std::vector<std::string> known = {"--rounds", "--kd-runs", "--cases",     "--threads",   "--scale",
                                                 "--python", "--steps",   "--hand-loop", "--lean-loop", "--gemm-bound"};
  for (int i = 1; i < argc; i += 2) {
    if (std::find(known.begin(), known.end(), argv[i]) == known.end()) {
      if (std::strcmp(argv[i], "--help") != 0 && std::strcmp(argv[i], "-h") != 0) {
        std::fprintf(stderr, "train_bench: unknown argument %s\n", argv[i]);
      }
      return false;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "train_bench: %s needs a value\n", argv[i]);
      return false;
    }
  }
  return true;
}

int main(int argc, char** argv) {
  const bool help = argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0);
  if (help || !arguments_known(argc, argv)) {
    std::fprintf(help ? stdout : stderr,
                 "usage: train_bench [--rounds 3] [--kd-runs 2] [--cases flagship,tiny,cnn] [--threads 1,2] "
                 "[--scale 1.0] [--python python3]\n"
                 "       train_bench --lean-loop|--hand-loop CASE --threads N --steps N\n"
                 "       train_bench --gemm-bound CASE --threads N\n"
                 "(the cases and programs are described at the top of tests/bench/train_bench.cpp)\n");
    return help ? 0 : 2;
  }
  const int threads_flag = std::stoi(flag(argc, argv, "--threads", "1").substr(0, 3));
  if (const std::string only = flag(argc, argv, "--hand-loop", ""); !only.empty()) {
    return hand_loop(find_case(only), threads_flag, std::stoll(flag(argc, argv, "--steps", "1000")));
  }
  if (const std::string only = flag(argc, argv, "--lean-loop", ""); !only.empty()) {
    return lean_loop(find_case(only), threads_flag, std::stoll(flag(argc, argv, "--steps", "1000")));
  }
  if (const std::string only = flag(argc, argv, "--gemm-bound", ""); !only.empty()) {
    return gemm_bound(find_case(only), threads_flag);
  }
  const int rounds = std::stoi(flag(argc, argv, "--rounds", "3"));
  const int kd_runs = std::max(1, std::stoi(flag(argc, argv, "--kd-runs", "2")));
  const double scale = std::stod(flag(argc, argv, "--scale", "1"));
  const std::vector<std::string> case_names = split(flag(argc, argv, "--cases", "flagship,tiny"));
  const std::vector<std::string> thread_counts = split(flag(argc, argv, "--threads", "1,2"));
  std::string python = flag(argc, argv, "--python", "");
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string kd = KD_BENCH_KD_BINARY;

  const fs::path dir = fs::temp_directory_path() / ("kd-train-bench-" + std::to_string(getpid()));
  fs::create_directories(dir);
  if (python.empty()) {  // the first python3 on PATH with torch, else Debian's
    python = python_has_torch("python3", dir) ? "python3" : "/usr/bin/python3";
  }
  const bool with_python = python_has_torch(python, dir);
  if (!with_python) {
    std::printf("(no Python loop: %s cannot import torch; apt-get install python3-torch, or pass --python)\n",
                python.c_str());
  }
  // kd's allocator thresholds (trainer/runtime/memory.cpp), for the programs that do not set them.
  const std::map<std::string, std::string> allocator = {{"MALLOC_MMAP_THRESHOLD_", std::to_string(32 << 20)},
                                                        {"MALLOC_TRIM_THRESHOLD_", std::to_string(INT_MAX)}};
  const fs::path script = dir / "loop.py";
  std::ofstream(script) << kPythonLoop;

  for (const auto& name : case_names) {
    const Case& c = find_case(name);
    const int64_t steps = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(c.steps) * scale));
    const fs::path experiment = dir / (c.name + ".yaml");
    std::ofstream(experiment) << kd_experiment(c, steps);
    for (const auto& threads : thread_counts) {
      Series kd_loop, lean, hand, py, bound, kd_proc, lean_proc, hand_proc;
      Series kd_vs_lean, kd_vs_hand, kd_vs_py, kd_vs_bound, proc_vs_lean, proc_vs_hand, kd_mb, lean_mb, hand_mb, py_mb;
      for (int r = 0; r < rounds; ++r) {
        const fs::path workdir = dir / ("workdir-" + c.name + "-" + threads + "-" + std::to_string(r));
        const std::string steps_text = std::to_string(steps);
        const auto run_kd = [&] {
          Run run = run_process({kd, "train", "--cfg=" + experiment.string(), "--cfg.workdir=" + workdir.string(),
                                 "--cfg.num_threads=" + threads},
                                dir / "kd.log");
          fs::remove_all(workdir);
          return run;
        };
        std::vector<std::pair<std::string, std::function<Run()>>> programs = {
            {"kd", run_kd},
            {"lean",
             [&] {
               return run_process({self, "--lean-loop", c.name, "--threads", threads, "--steps", steps_text},
                                  dir / "lean.log", allocator);
             }},
            {"hand",
             [&] {
               return run_process({self, "--hand-loop", c.name, "--threads", threads, "--steps", steps_text},
                                  dir / "hand.log", allocator);
             }},
        };
        if (!c.cnn) {
          programs.emplace_back("bound", [&] {
            return run_process({self, "--gemm-bound", c.name, "--threads", threads}, dir / "bound.log");
          });
        }
        if (with_python) {
          programs.emplace_back("python", [&] {
            return run_process({python, script.string(), c.name, threads, steps_text, std::to_string(kCropPadding),
                                std::to_string(kPeakLearningRate), std::to_string(kWarmupSteps)},
                               dir / "python.log", allocator);
          });
        }
        for (int k = 1; k < kd_runs; ++k) programs.emplace_back("kd" + std::to_string(k), run_kd);
        // Alternate the order, so that none always runs on a cooler or warmer machine.
        if (r % 2) std::reverse(programs.begin(), programs.end());
        std::map<std::string, Run> runs;
        for (auto& [program, run] : programs) runs[program] = run();
        const double n = static_cast<double>(steps);
        const double l = n / loop_seconds(runs["lean"].output), h = n / loop_seconds(runs["hand"].output);
        lean.add(l), hand.add(h);
        lean_proc.add(n / runs["lean"].seconds), hand_proc.add(n / runs["hand"].seconds);
        lean_mb.add(runs["lean"].peak_rss_mb), hand_mb.add(runs["hand"].peak_rss_mb);
        const double g = c.cnn ? 0 : 1.0 / gemm_seconds(runs["bound"].output);
        if (!c.cnn) bound.add(g);
        const double p = with_python ? n / loop_seconds(runs["python"].output) : 0;
        if (with_python) py.add(p), py_mb.add(runs["python"].peak_rss_mb);
        for (int k = 0; k < kd_runs; ++k) {
          const Run& run = runs[k == 0 ? "kd" : "kd" + std::to_string(k)];
          const double kd_steps = n / kd_loop_seconds(run.output, steps);
          kd_loop.add(kd_steps), kd_proc.add(n / run.seconds), kd_mb.add(run.peak_rss_mb);
          kd_vs_lean.add(kd_steps / l), kd_vs_hand.add(kd_steps / h);
          proc_vs_lean.add(runs["lean"].seconds / run.seconds), proc_vs_hand.add(runs["hand"].seconds / run.seconds);
          if (!c.cnn) kd_vs_bound.add(kd_steps / g);
          if (with_python) kd_vs_py.add(kd_steps / p);
        }
      }
      std::printf("%s, %s thread%s, %lld steps, %d rounds, kd %d runs a round (median (min-max)):\n", c.name.c_str(),
                  threads.c_str(), threads == "1" ? "" : "s", static_cast<long long>(steps), rounds, kd_runs);
      std::printf("  loop steps/s     kd %s  lean %s  hand %s  python %s  matrix products alone %s\n",
                  kd_loop.text("%.1f").c_str(), lean.text("%.1f").c_str(), hand.text("%.1f").c_str(),
                  py.text("%.1f").c_str(), bound.text("%.1f").c_str());
      std::printf("  kd / lean %s  kd / hand %s  kd / python %s  kd / bound %s  kd's slowest / lean's median %.3f\n",
                  kd_vs_lean.text("%.3f").c_str(), kd_vs_hand.text("%.3f").c_str(), kd_vs_py.text("%.3f").c_str(),
                  kd_vs_bound.text("%.3f").c_str(), kd_loop.min() / lean.med());
      // The same ratio for programs that do the same work every run: how far the machine alone
      // moves a run from the median.
      std::printf("  the machine's spread: lean's slowest / its median %.3f", lean.min() / lean.med());
      if (!c.cnn) std::printf("  bound's slowest / its median %.3f", bound.min() / bound.med());
      std::printf("\n");
      std::printf("  process steps/s  kd %s  lean %s  hand %s;  kd / lean %s  kd / hand %s\n",
                  kd_proc.text("%.1f").c_str(), lean_proc.text("%.1f").c_str(), hand_proc.text("%.1f").c_str(),
                  proc_vs_lean.text("%.3f").c_str(), proc_vs_hand.text("%.3f").c_str());
      std::printf("  peak RSS MB      kd %.0f  lean %.0f  hand %.0f  python %s\n", kd_mb.med(), lean_mb.med(),
                  hand_mb.med(), py_mb.empty() ? "-" : std::to_string(static_cast<int>(py_mb.med())).c_str());
      std::fflush(stdout);
    }
  }
  fs::remove_all(dir);
  std::printf(
      "(ratios are per kd run, of steps/s, against the same round's program; rounds interleaved, the order reversed "
      "every other round)\n");
  return 0;
}
