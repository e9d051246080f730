// kd::train's step: the Auxiliaries of a step and TrainStep (the public header).
#pragma once

#include "trainer/step/auxiliaries.h"
#include "trainer/step/train_step.h"
