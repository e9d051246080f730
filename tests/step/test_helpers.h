// Small builders shared by the train-step tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "trainer/config/node.h"
#include "trainer/losses/loss.h"
#include "trainer/metrics/metric.h"
#include "trainer/models/model.h"
#include "trainer/step/auxiliaries.h"

namespace kd::testing {

inline config::Node yaml(const std::string& text) { return config::Node::parse(text, "test.yaml"); }

inline models::ModelPtr make_model(const std::string& text) { return models::registry().create(yaml(text)); }

inline metrics::MetricPtr make_metric(const std::string& text) { return metrics::registry().create(yaml(text)); }

// A float64 tensor of `values`.
inline torch::Tensor f64(const std::vector<double>& values) { return torch::tensor(values, torch::kDouble); }

// The small MLP and loss of the step tests (8 features, 3 classes: blobs()).
inline constexpr const char* kMlp = "{type: MLP, input_size: 8, hidden_sizes: [16], output_size: 3}";
inline constexpr const char* kXent = "{type: SoftmaxCrossEntropyWithIntLabels}";

// A metric that reads the given paths and keeps nothing: it makes the step fill those stages.
class Probe : public metrics::Metric {
 public:
  explicit Probe(const std::vector<std::string>& paths) {
    for (const auto& p : paths) add_key(p, Path::parse(p));
  }
  Tree get_state(const train::Context&) const override { return Tree(); }
  Tree merge(const Tree& a, const Tree&) const override { return a; }
  Tree compute(const Tree&) const override { return Tree(); }
};

inline std::shared_ptr<train::Auxiliaries> aux_with(const std::string& loss_yaml,
                                                    const std::vector<std::string>& probe_paths = {}) {
  auto aux = std::make_shared<train::Auxiliaries>();
  aux->losses.emplace_back("loss", losses::registry().create(yaml(loss_yaml)));
  if (!probe_paths.empty()) aux->metrics.emplace_back("probe", std::make_shared<Probe>(probe_paths));
  return aux;
}

// A linearly separable 3-class problem: the label is the arg-max of a fixed projection.
inline Tree blobs(int64_t n, int64_t seed) {
  torch::manual_seed(seed);
  const torch::Tensor x = torch::randn({n, 8});
  const torch::Tensor w = torch::arange(24, torch::kFloat).reshape({8, 3}).sin();
  return Tree::dict({{"image", x}, {"label", x.mm(w).argmax(1)}});
}

}  // namespace kd::testing
