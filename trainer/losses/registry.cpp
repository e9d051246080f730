#include "trainer/losses/loss.h"

namespace kd::losses {

// Defined beside the losses they add (regression.cpp, classification.cpp).
void add_regression_losses(config::Registry<Loss>& r);
void add_classification_losses(config::Registry<Loss>& r);

config::Registry<Loss>& registry() {
  return config::Registry<Loss>::built_once("loss", [](config::Registry<Loss>& r) {
    add_regression_losses(r);
    add_classification_losses(r);
  });
}

}  // namespace kd::losses
