// kd::train's run: the Trainer, its options and callbacks (the public header).
#pragma once

#include "trainer/run/callback.h"
#include "trainer/run/trainer.h"
#include "trainer/run/trainer_options.h"
