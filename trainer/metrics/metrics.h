// kd::metrics: the Metric base, its states and the registry of built-in metrics (the public header).
#pragma once

#include "trainer/metrics/metric.h"
#include "trainer/metrics/states.h"
