// kd::checkpoints: saving, resuming, exporting and starting from checkpoints (the public header).
#pragma once

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/checkpoints/export.h"
#include "trainer/checkpoints/init_transform.h"
#include "trainer/checkpoints/random_states.h"
#include "trainer/checkpoints/safetensors.h"
