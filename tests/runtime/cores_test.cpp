#include <catch2/catch.hpp>

#include <sched.h>

#include <thread>

#include "trainer/runtime/cores.h"

TEST_CASE("the available cores are those of the affinity mask, not all of the machine's") {
  int64_t seen = 0, machine = 0;
  std::thread([&] {  // the mask is per thread: changed on one of its own
    cpu_set_t all;
    REQUIRE(sched_getaffinity(0, sizeof(all), &all) == 0);
    machine = kd::runtime::available_cores();
    CHECK(machine == CPU_COUNT(&all));
    int first = 0;
    while (!CPU_ISSET(first, &all)) ++first;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    REQUIRE(sched_setaffinity(0, sizeof(one), &one) == 0);
    seen = kd::runtime::available_cores();
  })
      .join();
  CHECK(seen == 1);
  CHECK(machine >= 1);
}
