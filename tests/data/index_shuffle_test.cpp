#include <catch2/catch.hpp>

#include <cstdint>
#include <set>
#include <vector>

#include "trainer/data/index_shuffle.h"

using kd::data::index_shuffle;

TEST_CASE("index_shuffle is a permutation of [0, n) for every n, computed position by position") {
  for (const uint64_t n : {1ULL, 2ULL, 3ULL, 7ULL, 16ULL, 17ULL, 1000ULL, 4097ULL}) {
    for (const uint64_t seed : {0ULL, 1ULL, 0xdeadbeefULL}) {
      std::set<uint64_t> seen;
      for (uint64_t p = 0; p < n; ++p) {
        const uint64_t i = index_shuffle(p, n, seed);
        REQUIRE(i < n);
        seen.insert(i);
      }
      CHECK(seen.size() == n);
    }
  }
}

TEST_CASE("index_shuffle: another seed gives another order, the same seed the same one; huge n costs nothing") {
  std::vector<uint64_t> a, b, c;
  for (uint64_t p = 0; p < 100; ++p) {
    a.push_back(index_shuffle(p, 100, 1));
    b.push_back(index_shuffle(p, 100, 2));
    c.push_back(index_shuffle(p, 100, 1));
  }
  CHECK(a != b);
  CHECK(a == c);
  // Not the identity, and not a rotation: about one fixed point is expected of a random order.
  int fixed = 0;
  for (uint64_t p = 0; p < 100; ++p) fixed += a[p] == p;
  CHECK(fixed < 10);
  // A billion examples: any position at once, distinct indices.
  const uint64_t billion = 1'000'000'000ULL;
  std::set<uint64_t> some;
  for (uint64_t p = billion - 1000; p < billion; ++p) some.insert(index_shuffle(p, billion, 7));
  CHECK(some.size() == 1000);
  CHECK(*some.rbegin() < billion);
}
