// kd::optim: the optimizer, its registered types, its state as a tree, and schedules (the public
// header).
#pragma once

#include "trainer/optim/fused_adam.h"
#include "trainer/optim/optimizer.h"
#include "trainer/optim/optimizer_state.h"
#include "trainer/optim/optimizer_type.h"
#include "trainer/optim/schedules.h"
