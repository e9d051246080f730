// kd::config: YAML experiments, their overrides, and the registries that build components from them (the public
// header).
#pragma once

#include "trainer/config/experiment.h"
#include "trainer/config/node.h"
#include "trainer/config/registry.h"
