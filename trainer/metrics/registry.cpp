#include "trainer/metrics/metric.h"

namespace kd::metrics {

// Defined beside the metrics they add.
void add_classification_metrics(config::Registry<Metric>& r);  // classification.cpp
void add_stats_metrics(config::Registry<Metric>& r);           // stats.cpp
void add_image_metrics(config::Registry<Metric>& r);           // images.cpp
void add_wrapper_metrics(config::Registry<Metric>& r);         // wrappers.cpp

config::Registry<Metric>& registry() {
  // Built on first use by explicit calls: no static initialisation order, and a static library
  // cannot drop a metric's registration.
  static config::Registry<Metric>* registry = [] {
    auto* r = new config::Registry<Metric>("metric");
    add_classification_metrics(*r);
    add_stats_metrics(*r);
    add_image_metrics(*r);
    add_wrapper_metrics(*r);
    return r;
  }();
  return *registry;
}

}  // namespace kd::metrics
