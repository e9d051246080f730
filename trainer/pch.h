// Precompiled header for kd's own targets (see KD_USE_PCH). Not part of the public API:
// every source still includes what it uses.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
