#include "trainer/run/callback.h"

#include "trainer/run/early_stopping.h"

namespace kd::train {

config::Registry<Callback>& callback_registry() {
  return config::Registry<Callback>::built_once("callback", [](config::Registry<Callback>& r) {
    r.add<EarlyStopping>("EarlyStopping",
                         "metric: <eval>/<logged value> (e.g. test/metrics/accuracy), mode: max|min = max, "
                         "patience = 3 (evals without improvement), min_delta = 0");
  });
}

}  // namespace kd::train
