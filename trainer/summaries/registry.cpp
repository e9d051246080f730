#include "trainer/summaries/summary.h"

namespace kd::summaries {

// Defined beside the summaries they add.
void add_image_summaries(config::Registry<Summary>& r);      // images.cpp
void add_histogram_summaries(config::Registry<Summary>& r);  // histogram.cpp
void add_text_summaries(config::Registry<Summary>& r);       // texts.cpp

config::Registry<Summary>& registry() {
  // Built on first use by explicit calls: no static initialisation order, and a static library
  // cannot drop a summary's registration.
  static config::Registry<Summary>* registry = [] {
    auto* r = new config::Registry<Summary>("summary");
    add_image_summaries(*r);
    add_histogram_summaries(*r);
    add_text_summaries(*r);
    return r;
  }();
  return *registry;
}

}  // namespace kd::summaries
