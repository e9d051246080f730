#include "trainer/losses/loss.h"

namespace kd::losses {

// Defined beside the losses they add (regression.cpp, classification.cpp).
void add_regression_losses(config::Registry<Loss>& r);
void add_classification_losses(config::Registry<Loss>& r);

config::Registry<Loss>& registry() {
  // Built on first use by explicit calls, so no static initialisation order is involved and a
  // static library cannot drop a loss's registration.
  static config::Registry<Loss>* registry = [] {
    auto* r = new config::Registry<Loss>("loss");
    add_regression_losses(*r);
    add_classification_losses(*r);
    return r;
  }();
  return *registry;
}

}  // namespace kd::losses
