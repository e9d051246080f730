// kd::evals: evaluating a model on a dataset with its own losses, metrics and summaries (the public header).
#pragma once

#include "trainer/evals/evaluator.h"
