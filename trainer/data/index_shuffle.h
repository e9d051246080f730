// kd::data::index_shuffle: position -> example index of a seeded pseudo-random permutation of
// [0, n), computed for one position at a time in O(1) memory (grain's index_shuffle does the
// same): a balanced Feistel network over the smallest even number of bits that holds n, walked
// along its cycle until the value falls inside [0, n). A billion examples cost nothing up front,
// and the order depends only on (position, n, seed): the same on every machine, for any number
// of workers or ranks.
#pragma once

#include <cstdint>

namespace kd::data {

// The element at `position` (< n) of the permutation of [0, n) given by `seed`. Distinct
// positions give distinct indices; n == 0 or 1 gives `position`.
uint64_t index_shuffle(uint64_t position, uint64_t n, uint64_t seed);

// SplitMix64's finaliser: a well-mixed 64-bit value of x (seeds of epochs, batches, examples).
uint64_t mix_bits(uint64_t x);

}  // namespace kd::data
