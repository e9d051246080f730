// SLURM's variables and host lists, against SLURM's documented expansions (scontrol show hostnames).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trainer/common/error.h"
#include "trainer/distributed/distributed.h"

using kd::distributed::expand_hostlist;
using kd::distributed::world_from_environment;
using kd::distributed::world_from_slurm;

namespace {

using Hosts = std::vector<std::string>;

// Sets the variables for its lifetime (unset: nullopt), restoring what was there.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::optional<std::string>>& values) {
    for (const auto& [name, value] : values) {
      const char* before = std::getenv(name.c_str());
      saved_[name] = before ? std::optional<std::string>(before) : std::nullopt;
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, value] : saved_) {
      if (value) {
        setenv(name.c_str(), value->c_str(), 1);
      } else {
        unsetenv(name.c_str());
      }
    }
  }

 private:
  std::map<std::string, std::optional<std::string>> saved_;
};

// Every variable the tests read, unset.
std::map<std::string, std::optional<std::string>> clean() {
  std::map<std::string, std::optional<std::string>> out;
  for (const char* name :
       {"WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS",
        "SLURM_LOCALID", "SLURM_NODEID", "SLURM_TASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_JOB_NODELIST",
        "SLURM_STEP_NODELIST", "SLURM_NODELIST", "SLURM_JOB_ID", "SLURM_STEP_ID", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}) {
    out[name] = std::nullopt;
  }
  return out;
}

}  // namespace

TEST_CASE("SLURM host lists expand as scontrol show hostnames does") {
  CHECK(expand_hostlist("node[01-04,07],gpu-a") == Hosts{"node01", "node02", "node03", "node04", "node07", "gpu-a"});
  CHECK(expand_hostlist("n[8-11]") == Hosts{"n8", "n9", "n10", "n11"});
  CHECK(expand_hostlist("n[098-101]") == Hosts{"n098", "n099", "n100", "n101"});
  CHECK(expand_hostlist("rack[1-2]-n[1,3]") == Hosts{"rack1-n1", "rack1-n3", "rack2-n1", "rack2-n3"});
  CHECK(expand_hostlist("solo") == Hosts{"solo"});
  CHECK(expand_hostlist("node[01-99]", 1) == Hosts{"node01"});
  CHECK_THROWS_WITH(expand_hostlist("node[01-04"), Catch::Contains("a \"[\" without its \"]\""));
  CHECK_THROWS_WITH(expand_hostlist("node[4-1]"), Catch::Contains("is not a number or a range N-M"));
  CHECK_THROWS_WITH(expand_hostlist("node[a-b]"), Catch::Contains("is not a number or a range N-M"));
}

TEST_CASE("srun's variables give the rank, the world, the rendezvous host and a port from the job id") {
  auto vars = clean();
  vars["SLURM_PROCID"] = "3";
  vars["SLURM_NTASKS"] = "4";
  vars["SLURM_LOCALID"] = "1";
  vars["SLURM_NODEID"] = "1";
  vars["SLURM_TASKS_PER_NODE"] = "2(x2)";
  vars["SLURM_JOB_NODELIST"] = "gpu[07-08]";
  vars["SLURM_JOB_ID"] = "1234567";
  {
    const ScopedEnv env(vars);
    const auto w = world_from_environment();  // no WORLD_SIZE: SLURM's
    REQUIRE(w);
    CHECK(w->rank == 3);
    CHECK(w->world_size == 4);
    CHECK(w->local_rank == 1);
    CHECK(w->local_world_size == 2);
    CHECK(w->master_addr == "gpu07");
    CHECK(w->master_port == 15000 + 4567);
    CHECK(w->source == "SLURM job 1234567");
  }
  {  // MASTER_ADDR and MASTER_PORT win; an srun step's own counts win over the job's.
    auto step = vars;
    step["MASTER_ADDR"] = "10.0.0.9";
    step["MASTER_PORT"] = "29999";
    step["SLURM_STEP_NUM_TASKS"] = "8";
    step["SLURM_STEP_ID"] = "0";
    const ScopedEnv env(step);
    const auto w = world_from_slurm();
    REQUIRE(w);
    CHECK(w->world_size == 8);
    CHECK(w->master_addr == "10.0.0.9");
    CHECK(w->master_port == 29999);
    CHECK(w->source == "SLURM job 1234567, step 0");
  }
  {  // torchrun's variables win over SLURM's.
    auto both = vars;
    both["WORLD_SIZE"] = "2";
    both["RANK"] = "1";
    both["MASTER_ADDR"] = "127.0.0.1";
    both["MASTER_PORT"] = "29500";
    const ScopedEnv env(both);
    const auto w = world_from_environment();
    REQUIRE(w);
    CHECK(w->world_size == 2);
    CHECK(w->source == "torchrun's variables");
  }
  {  // One task, or no SLURM: one process.
    auto one = vars;
    one["SLURM_NTASKS"] = "1";
    one["SLURM_PROCID"] = "0";
    const ScopedEnv env(one);
    CHECK_FALSE(world_from_environment());
  }
  {
    const ScopedEnv env(clean());
    CHECK_FALSE(world_from_environment());
  }
  {
    auto bad = vars;
    bad["SLURM_PROCID"] = "9";
    const ScopedEnv env(bad);
    CHECK_THROWS_WITH(world_from_slurm(), Catch::Contains("SLURM_PROCID=9 is not below the task count 4"));
  }
}
