#include "trainer/distributed/distributed.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#define KD_COMPAT_C10D
#include "trainer/common/error.h"
#include "trainer/compat/torch_compat.h"
#include "trainer/config/node.h"
#include "trainer/tree/tree_json.h"

namespace kd::distributed {
namespace {

using json = nlohmann::ordered_json;

std::string seconds(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

// The first line of a c10d / Gloo error (the rest is a C++ backtrace).
std::string first_line(const std::exception& e) {
  std::string what;
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    what = c10->msg();
  } else {
    what = e.what();
  }
  what = what.substr(0, what.find('\n'));
  while (!what.empty() && (what.back() == '.' || what.back() == '!' || what.back() == ' ')) what.pop_back();
  return what;
}

int env_int(const char* name, std::optional<int> fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') {
    if (fallback) return *fallback;
    throw ConfigError(std::string("the environment sets WORLD_SIZE but not ") + name +
                      "; start every rank with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set "
                      "(torchrun and `kd launch --nproc=N` do)");
  }
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(value, &end, 10);
  if (errno != 0 || end == value || *end != '\0' || v < 0 || v > 1'000'000) {
    throw ConfigError(std::string("the environment variable ") + name + "=\"" + value +
                      "\" is not a non-negative integer");
  }
  return static_cast<int>(v);
}

// The address of this host's interface that reaches `host`: the kernel's route to it, read from a
// UDP socket connected there (which sends nothing); "" when `host` does not resolve. Gloo binds
// there, so that on a machine whose name resolves to no address on the job's network (or to
// loopback) the ranks still reach each other, without GLOO_SOCKET_IFNAME.
std::string address_toward(const std::string& host) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), "9", &hints, &found) != 0) return "";
  std::string out;
  for (const addrinfo* a = found; a != nullptr && out.empty(); a = a->ai_next) {
    const int fd = ::socket(a->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) == 0) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* address = local.ss_family == AF_INET
                                ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&local)->sin_addr)
                                : static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&local)->sin6_addr);
      if (::inet_ntop(local.ss_family, address, text, sizeof text) != nullptr) out = text;
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  return out;
}

class C10dProcessGroup final : public ProcessGroup {
 public:
  C10dProcessGroup(const WorldInfo& world, const Options& options, const c10::Device& device)
      : rank_(world.rank), size_(world.world_size), timeout_(options.timeout) {
    backend_ = options.backend;
    if (backend_ == "auto") backend_ = device.is_cuda() && compat::kHaveNccl ? "nccl" : "gloo";
    where_ = "rank " + std::to_string(rank_) + " of " + std::to_string(size_);
    const std::string advice =
        ". Start every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE; rank 0 "
        "serves the rendezvous, so it must be running and its port free";
    const std::string rendezvous = world.master_addr + ":" + std::to_string(world.master_port);
    // A name that does not resolve is said at once, not after distributed.timeout_s of retries.
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (const int rc = getaddrinfo(world.master_addr.c_str(), nullptr, &hints, &found); rc != 0) {
      throw DistributedError(where_ + ": MASTER_ADDR=" + world.master_addr + " does not resolve to an address (" +
                             gai_strerror(rc) + "); set it to rank 0's host name or IP address");
    }
    freeaddrinfo(found);
    // Under torchrun's agent store (TORCHELASTIC_USE_AGENT_STORE=True) the agent already
    // serves MASTER_PORT and every rank is a client, keyed by the restart attempt, as
    // torch.distributed does; otherwise rank 0 serves it.
    const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE");
    const bool agent_store = agent != nullptr && std::string(agent) == "True";
    const int attempt = agent_store ? env_int("TORCHELASTIC_RESTART_COUNT", 0) : 0;
    try {
      c10d::TCPStoreOptions store_options;
      store_options.port = static_cast<std::uint16_t>(world.master_port);
      store_options.isServer = rank_ == 0 && !agent_store;
      store_options.numWorkers = static_cast<std::size_t>(size_);
      store_options.waitWorkers = !agent_store;
      store_options.timeout = timeout_;
      store_ = c10::make_intrusive<c10d::TCPStore>(world.master_addr, store_options);
      if (agent_store) {
        store_ = c10::make_intrusive<c10d::PrefixStore>("/worker/attempt_" + std::to_string(attempt), store_);
      }
    } catch (const std::exception& e) {
      throw DistributedError(where_ + ": the rendezvous at " + rendezvous + " failed within distributed.timeout_s (" +
                             seconds(timeout_) + "): " + first_line(e) + advice);
    }
    try {
      if (device.is_cuda()) compat::set_cuda_device(device.index());
      group_ = compat::make_process_group(backend_, store_, rank_, size_, timeout_, address_toward(world.master_addr));
    } catch (const kd::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw DistributedError(where_ + ": the " + backend_ + " process group did not form at " + rendezvous +
                             " within distributed.timeout_s (" + seconds(timeout_) + "): " + first_line(e) +
                             "; not every rank joined" + advice);
    }
  }

  int rank() const override { return rank_; }
  c10::Device device() const override { return group_device(); }
  int size() const override { return size_; }
  const std::string& backend() const override { return backend_; }
  std::chrono::milliseconds timeout() const override { return timeout_; }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors, const std::string& what) override {
    run(what, [&] {
      each(tensors, [&](std::vector<torch::Tensor>& t) {
        c10d::AllreduceOptions o;
        o.reduceOp = c10d::ReduceOp::SUM;
        o.timeout = timeout_;
        return group_->allreduce(t, o);
      });
    });
  }

  void broadcast(std::vector<torch::Tensor>& tensors, int root, const std::string& what) override {
    run(what, [&] {
      each(tensors, [&](std::vector<torch::Tensor>& t) {
        c10d::BroadcastOptions o;
        o.rootRank = root;
        o.timeout = timeout_;
        return group_->broadcast(t, o);
      });
    });
  }

  std::vector<std::string> all_gather_bytes(const std::string& bytes, const std::string& what) override {
    std::vector<std::string> out(static_cast<std::size_t>(size_));
    run(what, [&] {
      const auto device = group_device();
      // The lengths first, then every rank's bytes padded to the longest.
      std::vector<torch::Tensor> in{torch::full({1}, static_cast<int64_t>(bytes.size()), torch::kLong).to(device)};
      std::vector<std::vector<torch::Tensor>> lengths(1);
      for (int r = 0; r < size_; ++r) lengths[0].push_back(torch::empty({1}, torch::kLong).to(device));
      c10d::AllgatherOptions o;
      o.timeout = timeout_;
      wait(group_->allgather(lengths, in, o));
      int64_t longest = 0;
      std::vector<int64_t> sizes;
      for (const auto& l : lengths[0]) {
        sizes.push_back(l.cpu().item<int64_t>());
        longest = std::max(longest, sizes.back());
      }
      torch::Tensor mine = torch::zeros({std::max<int64_t>(longest, 1)}, torch::kUInt8);
      std::memcpy(mine.data_ptr(), bytes.data(), bytes.size());
      std::vector<torch::Tensor> data_in{mine.to(device)};
      std::vector<std::vector<torch::Tensor>> data(1);
      for (int r = 0; r < size_; ++r) data[0].push_back(torch::empty_like(data_in[0]));
      wait(group_->allgather(data, data_in, o));
      for (int r = 0; r < size_; ++r) {
        const torch::Tensor d = data[0][static_cast<std::size_t>(r)].cpu();
        out[static_cast<std::size_t>(r)].assign(static_cast<const char*>(d.data_ptr()),
                                                static_cast<std::size_t>(sizes[static_cast<std::size_t>(r)]));
      }
    });
    return out;
  }

  void barrier(const std::string& what) override {
    // A one-element all-reduce: waits for every rank like a barrier, with the same timeout
    // handling as every other collective.
    std::vector<torch::Tensor> t{torch::zeros({1}, torch::kFloat).to(group_device())};
    all_reduce_sum(t, what);
  }

 private:
  c10::Device group_device() const {
    return backend_ == "nccl" ? c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(compat::current_cuda_device()))
                              : c10::Device(c10::kCPU);
  }

  // Starts `start` on every tensor (one operation each, running concurrently), then waits for all.
  template <typename Start>
  void each(std::vector<torch::Tensor>& tensors, Start start) {
    std::vector<std::vector<torch::Tensor>> inputs;
    inputs.reserve(tensors.size());
    std::vector<c10::intrusive_ptr<compat::Work>> works;
    for (auto& t : tensors) {
      inputs.push_back({t});
      works.push_back(start(inputs.back()));
    }
    for (auto& w : works) wait(w);
  }

  // Raised by wait(): the operation started, and what it waited for never came. kd starts the
  // same collectives with the same shapes on every rank, so that is always another rank's doing.
  struct PeerFailure {
    std::string message;
  };

  void wait(const c10::intrusive_ptr<compat::Work>& work) {
    try {
      work->wait(timeout_);
    } catch (const std::exception& e) {
      throw PeerFailure{first_line(e)};
    }
  }

  // Runs the operation `what`; a failure is reported from what happened, not from the wording
  // of Gloo's or NCCL's messages (which differ between versions and backends): a failure while
  // waiting that came only after distributed.timeout_s is a rank that does not answer; an
  // earlier one is a rank whose connection closed; one at the start is a local error.
  template <typename F>
  void run(const std::string& what, F&& f) {
    const auto start = std::chrono::steady_clock::now();
    try {
      f();
    } catch (const PeerFailure& failure) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
      // The backends time out after exactly `timeout_`; a tenth less allows for clock granularity.
      const bool timed_out = waited >= timeout_ - timeout_ / 10;
      throw DistributedError(
          where_ + ": " + what + " failed after " + seconds(waited) + ": " + failure.message +
          (timed_out ? ". Another rank did not answer within distributed.timeout_s (" + seconds(timeout_) +
                           "): it hangs, was paused, or died without closing its connection; its own log says why"
                     : ". Another rank died or was stopped (its connection closed); its own log says why"));
    } catch (const kd::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw DistributedError(where_ + ": " + what + " could not start: " + first_line(e));
    }
  }

  int rank_, size_;
  std::chrono::milliseconds timeout_;
  std::string backend_;
  std::string where_;
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<compat::Backend> group_;
};

}  // namespace

std::optional<WorldInfo> world_from_environment() {
  const char* world_size = std::getenv("WORLD_SIZE");
  if (world_size == nullptr || *world_size == '\0') return world_from_slurm();
  WorldInfo w;
  w.world_size = env_int("WORLD_SIZE", std::nullopt);
  if (w.world_size < 1)
    throw ConfigError("the environment variable WORLD_SIZE must be >= 1, got " + std::to_string(w.world_size));
  w.rank = env_int("RANK", std::nullopt);
  if (w.rank >= w.world_size) {
    throw ConfigError("the environment variable RANK=" + std::to_string(w.rank) +
                      " must be below WORLD_SIZE=" + std::to_string(w.world_size));
  }
  w.local_rank = env_int("LOCAL_RANK", w.rank);
  w.local_world_size = env_int("LOCAL_WORLD_SIZE", 1);
  if (const char* local = std::getenv("LOCAL_WORLD_SIZE"); local != nullptr && *local != '\0') {
    if (w.local_world_size < 1 || w.local_world_size > w.world_size || w.local_rank >= w.local_world_size) {
      throw ConfigError(
          "the environment variables LOCAL_RANK=" + std::to_string(w.local_rank) +
          " and LOCAL_WORLD_SIZE=" + std::to_string(w.local_world_size) +
          " do not fit: need 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE=" + std::to_string(w.world_size));
    }
  }
  if (w.world_size > 1) {
    const char* addr = std::getenv("MASTER_ADDR");
    if (addr == nullptr || *addr == '\0') {
      throw ConfigError("the environment sets WORLD_SIZE=" + std::to_string(w.world_size) +
                        " but not MASTER_ADDR, the host of rank 0 (e.g. MASTER_ADDR=127.0.0.1 on one machine)");
    }
    w.master_addr = addr;
    w.master_port = env_int("MASTER_PORT", std::nullopt);
    if (w.master_port == 0 || w.master_port > 65535) {
      throw ConfigError("the environment variable MASTER_PORT=" + std::to_string(w.master_port) +
                        " is not a port (1-65535)");
    }
  }
  return w;
}

Options Options::from_config(const config::Node& node) {
  const Options defaults;
  Options o;
  o.backend = node.get_string("backend", defaults.backend);
  if (o.backend != "auto" && o.backend != "gloo" && o.backend != "nccl") {
    throw ConfigError(node.child("backend").where() + ": distributed.backend must be auto, gloo or nccl, got \"" +
                      o.backend + "\"");
  }
  if (o.backend == "nccl" && !compat::kHaveNccl) {
    throw ConfigError(node.child("backend").where() +
                      ": this LibTorch was built without NCCL; use backend: gloo (or auto)");
  }
  const double timeout_s =
      node.get_double_in("timeout_s", std::chrono::duration<double>(defaults.timeout).count(), 0.001, 7 * 24 * 3600.0);
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
  const double bucket_mb =
      node.get_double_in("bucket_mb", static_cast<double>(defaults.bucket_bytes) / (1 << 20), 0.001, 65536.0);
  o.bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
  node.check_unknown_keys();
  return o;
}

std::shared_ptr<ProcessGroup> ProcessGroup::create(const WorldInfo& world, const Options& options,
                                                   const c10::Device& device) {
  if (options.backend == "nccl" && !device.is_cuda()) {
    throw ConfigError("distributed.backend nccl needs device: cuda; use backend: gloo on the CPU");
  }
  return std::make_shared<C10dProcessGroup>(world, options, device);
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw IOError(std::string("cannot create a socket to find a free port: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw IOError(std::string("cannot find a free port: ") + std::strerror(errno) + "; pass --master_port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

}  // namespace kd::distributed
