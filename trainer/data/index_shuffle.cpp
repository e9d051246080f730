#include "trainer/data/index_shuffle.h"

namespace kd::data {

uint64_t mix_bits(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t index_shuffle(uint64_t position, uint64_t n, uint64_t seed) {
  if (n <= 1) return position;
  // The domain [0, 2^bits) with bits even and 2^bits < 4n: on average fewer than 4 passes of
  // the walk below.
  int bits = 64 - __builtin_clzll(n - 1);  // n >= 2: 1 to 64 (also in the C++17 fuzz build)
  bits += bits & 1;
  const int half = bits / 2;  // 1 to 32
  const uint64_t mask = (uint64_t{1} << half) - 1;
  constexpr int kRounds = 8;
  uint64_t keys[kRounds];
  for (int r = 0; r < kRounds; ++r) keys[r] = mix_bits(seed ^ mix_bits(static_cast<uint64_t>(r) + 1));
  uint64_t x = position;
  do {
    uint64_t left = x >> half, right = x & mask;
    for (const uint64_t key : keys) {
      const uint64_t next = left ^ (mix_bits(right ^ key) & mask);
      left = right;
      right = next;
    }
    x = (left << half) | right;
  } while (x >= n);  // a cycle of the permutation of [0, 2^bits) through `position` reaches [0, n)
  return x;
}

}  // namespace kd::data
