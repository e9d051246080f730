#include "trainer/run/callback.h"

namespace kd::train {

config::Registry<Callback>& callback_registry() {
  // No built-in callbacks: users add theirs (see callback.h).
  return config::Registry<Callback>::built_once("callback", [](config::Registry<Callback>&) {});
}

}  // namespace kd::train
