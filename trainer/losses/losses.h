// kd::losses: the Loss base and the registry of built-in losses (the public header).
#pragma once

#include "trainer/losses/loss.h"
