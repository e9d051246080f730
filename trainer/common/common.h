// kd's errors and the "did you mean" of its messages (the public header).
#pragma once

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/common/torch_fwd.h"
