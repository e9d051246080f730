// TrainStep against a hand-written LibTorch loop on the flagship MLP (784-512-256-10, Adam
// 1e-3, batch 128, softmax cross-entropy, accuracy), in one process, interleaved.
//
//   build/tests/bench/train_step_bench [--rounds 10] [--steps 50] [--threads 1] [--tiny]
//
// --tiny: the MLP 16-64-64-4 at batch 32 instead, where the per-step overhead shows.
// Prints the median step time of each, the ratio of steps/s (TrainStep / raw), and the CPU
// tensor allocations per step of each, with and without grads/updates/opt_state being read.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/compat/torch_compat.h"
#include "trainer/config/node.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/models/model.h"
#include "trainer/step/train_step.h"

namespace {

using Clock = std::chrono::steady_clock;
kd::compat::CountingCpuAllocator* allocator = nullptr;

struct Batch {
  torch::Tensor image, label;
};

// The model's layer sizes (input, hidden..., output) and the batch size.
struct Shape {
  std::vector<int64_t> sizes;
  int64_t batch_size;
};
Shape shape;

std::vector<Batch> make_batches(int n) {
  torch::manual_seed(0);
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i) {
    out.push_back({torch::rand({shape.batch_size, shape.sizes.front()}),
                   torch::randint(0, shape.sizes.back(), {shape.batch_size})});
  }
  return out;
}

torch::nn::Sequential make_net() {
  torch::nn::Sequential net;
  for (std::size_t i = 0; i + 1 < shape.sizes.size(); ++i) {
    net->push_back(torch::nn::Linear(shape.sizes[i], shape.sizes[i + 1]));
    if (i + 2 < shape.sizes.size()) net->push_back(torch::nn::ReLU());
  }
  return net;
}

std::string mlp_yaml() {
  std::string hidden;
  for (std::size_t i = 1; i + 1 < shape.sizes.size(); ++i)
    hidden += (hidden.empty() ? "" : ", ") + std::to_string(shape.sizes[i]);
  return "{type: MLP, input_size: " + std::to_string(shape.sizes.front()) + ", hidden_sizes: [" + hidden +
         "], output_size: " + std::to_string(shape.sizes.back()) + "}";
}

// The loop a LibTorch user writes by hand, keeping the same loss and accuracy sums as kd.
class RawLoop {
 public:
  RawLoop() : net_(make_net()), adam_(net_->parameters(), torch::optim::AdamOptions(1e-3)) {}

  void step(const Batch& b) {
    adam_.zero_grad();
    const torch::Tensor logits = net_->forward(b.image.reshape({b.image.size(0), -1}));
    const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, b.label);
    loss.backward();
    adam_.step();
    torch::NoGradGuard no_grad;
    const torch::Tensor correct = (logits.argmax(-1) == b.label).sum();
    loss_sum_ = loss_sum_.defined() ? loss_sum_ + loss.detach() : loss.detach();
    correct_ = correct_.defined() ? correct_ + correct : correct;
  }

 private:
  torch::nn::Sequential net_;
  torch::optim::Adam adam_;
  torch::Tensor loss_sum_, correct_;
};

class KdLoop {
 public:
  explicit KdLoop(const std::vector<std::string>& extra_metric_keys = {},
                  kd::train::NanPolicy nan_policy = kd::train::NanPolicy::kIgnore) {
    auto aux = std::make_shared<kd::train::Auxiliaries>();
    aux->losses.emplace_back(
        "xent", kd::losses::registry().create(kd::config::Node::parse(
                    "{type: SoftmaxCrossEntropyWithIntLabels, logits: preds.logits, labels: batch.label}")));
    aux->metrics.emplace_back("accuracy", kd::metrics::registry().create(kd::config::Node::parse("{type: Accuracy}")));
    for (const auto& key : extra_metric_keys) {
      aux->metrics.emplace_back(
          "norm_" + key, kd::metrics::registry().create(kd::config::Node::parse("{type: Norm, tensor: " + key + "}")));
    }
    auto model = kd::models::registry().create(kd::config::Node::parse(mlp_yaml()));
    step_ = std::make_unique<kd::train::TrainStep>(model, kd::config::Node::parse("{type: adam, learning_rate: 1e-3}"),
                                                   aux);
    step_->set_nan_policy(nan_policy);  // kIgnore: as the hand-written loop, no check of the loss
    state_ = step_->init();
  }

  void step(const Batch& b) {
    auto [next, aux] = step_->step(state_, kd::Tree::dict({{"image", b.image}, {"label", b.label}}));
    state_ = std::move(next);
    merged_ = merge(merged_, aux);
  }

 private:
  std::unique_ptr<kd::train::TrainStep> step_;
  kd::train::TrainState state_;
  kd::train::AuxiliariesState merged_;
};

template <typename Loop>
double seconds_per_step(Loop& loop, const std::vector<Batch>& batches, int steps) {
  const auto start = Clock::now();
  for (int i = 0; i < steps; ++i) loop.step(batches[static_cast<std::size_t>(i) % batches.size()]);
  return std::chrono::duration<double>(Clock::now() - start).count() / steps;
}

template <typename Loop>
double allocations_per_step(Loop& loop, const std::vector<Batch>& batches, int steps) {
  for (int i = 0; i < 3; ++i) loop.step(batches[static_cast<std::size_t>(i)]);  // optimizer state exists now
  const int64_t before = allocator->count();
  for (int i = 0; i < steps; ++i) loop.step(batches[static_cast<std::size_t>(i) % batches.size()]);
  return static_cast<double>(allocator->count() - before) / steps;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int arg(int argc, char** argv, const char* name, int def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::stoi(argv[i + 1]);
  }
  return def;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = arg(argc, argv, "--rounds", 10);
  const int steps = arg(argc, argv, "--steps", 50);
  const int threads = arg(argc, argv, "--threads", 1);
  const bool tiny = std::string(argc > 1 ? argv[argc - 1] : "") == "--tiny";
  shape = tiny ? Shape{{16, 64, 64, 4}, 32} : Shape{{784, 512, 256, 10}, 128};
  torch::set_num_threads(threads);
  allocator = new kd::compat::CountingCpuAllocator();
  allocator->install();
  const auto batches = make_batches(16);

  torch::manual_seed(0);
  RawLoop raw;
  torch::manual_seed(0);
  KdLoop kd_loop;
  torch::manual_seed(0);
  KdLoop kd_checked({}, kd::train::NanPolicy::kRaise);  // kd train's default: the loss checked every step
  seconds_per_step(raw, batches, 10);                   // warm up
  seconds_per_step(kd_loop, batches, 10);
  seconds_per_step(kd_checked, batches, 10);

  std::vector<double> raw_times, kd_times, checked_times, ratios, checked_ratios;
  for (int r = 0; r < rounds; ++r) {
    double t_raw, t_kd, t_checked;
    if (r % 2 == 0) {
      t_raw = seconds_per_step(raw, batches, steps);
      t_kd = seconds_per_step(kd_loop, batches, steps);
      t_checked = seconds_per_step(kd_checked, batches, steps);
    } else {
      t_checked = seconds_per_step(kd_checked, batches, steps);
      t_kd = seconds_per_step(kd_loop, batches, steps);
      t_raw = seconds_per_step(raw, batches, steps);
    }
    raw_times.push_back(t_raw);
    kd_times.push_back(t_kd);
    checked_times.push_back(t_checked);
    ratios.push_back(t_raw / t_kd);
    checked_ratios.push_back(t_raw / t_checked);
    std::printf("round %2d: raw %.3f ms/step, TrainStep %.3f ms/step (ratio %.3f), with the loss check %.3f (%.3f)\n",
                r, t_raw * 1e3, t_kd * 1e3, t_raw / t_kd, t_checked * 1e3, t_raw / t_checked);
  }
  std::printf("\nthreads %d, %d rounds x %d steps, batch %lld\n", threads, rounds, steps,
              static_cast<long long>(shape.batch_size));
  std::printf("median raw loop:  %.3f ms/step (%.1f steps/s)\n", median(raw_times) * 1e3, 1 / median(raw_times));
  std::printf("median TrainStep: %.3f ms/step (%.1f steps/s)\n", median(kd_times) * 1e3, 1 / median(kd_times));
  std::printf("median TrainStep, nan_policy raise: %.3f ms/step\n", median(checked_times) * 1e3);
  std::printf("TrainStep / raw steps/s: median of per-round ratios %.3f (with the loss check %.3f)\n", median(ratios),
              median(checked_ratios));

  torch::manual_seed(0);
  RawLoop raw2;
  torch::manual_seed(0);
  KdLoop kd2;
  torch::manual_seed(0);
  KdLoop kd_reading({"grads", "updates", "opt_state.layers.0.weight.exp_avg"});
  const double a_raw = allocations_per_step(raw2, batches, 20);
  const double a_kd = allocations_per_step(kd2, batches, 20);
  const double a_read = allocations_per_step(kd_reading, batches, 20);
  std::printf(
      "\nCPU tensor allocations per step: raw %.1f, TrainStep %.1f (extra %.1f), "
      "TrainStep reading grads/updates/opt_state %.1f\n",
      a_raw, a_kd, a_kd - a_raw, a_read);
  return 0;
}
