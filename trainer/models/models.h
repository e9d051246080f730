// kd::models: the Model base and the registry of built-in models (the public header).
#pragma once

#include "trainer/models/model.h"
