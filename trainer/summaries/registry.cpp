#include "trainer/summaries/summary.h"

namespace kd::summaries {

// Defined beside the summaries they add.
void add_image_summaries(config::Registry<Summary>& r);      // images.cpp
void add_histogram_summaries(config::Registry<Summary>& r);  // histogram.cpp
void add_text_summaries(config::Registry<Summary>& r);       // texts.cpp

config::Registry<Summary>& registry() {
  return config::Registry<Summary>::built_once("summary", [](config::Registry<Summary>& r) {
    add_image_summaries(r);
    add_histogram_summaries(r);
    add_text_summaries(r);
  });
}

}  // namespace kd::summaries
