// kd::summaries: the Summary base and the registry of built-in summaries (the public header).
#pragma once

#include "trainer/summaries/summary.h"
