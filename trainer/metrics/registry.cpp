#include "trainer/metrics/metric.h"

namespace kd::metrics {

// Defined beside the metrics they add.
void add_classification_metrics(config::Registry<Metric>& r);  // classification.cpp
void add_stats_metrics(config::Registry<Metric>& r);           // stats.cpp
void add_image_metrics(config::Registry<Metric>& r);           // images.cpp
void add_wrapper_metrics(config::Registry<Metric>& r);         // wrappers.cpp

config::Registry<Metric>& registry() {
  return config::Registry<Metric>::built_once("metric", [](config::Registry<Metric>& r) {
    add_classification_metrics(r);
    add_stats_metrics(r);
    add_image_metrics(r);
    add_wrapper_metrics(r);
  });
}

}  // namespace kd::metrics
