// Choosing a checkpoint: listing a checkpoint directory and the one rule every reader follows
// (resume, kd eval, kd export, init_transform, kd report), from checkpointer.cpp.
#include <algorithm>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "trainer/checkpoints/checkpoint_files_internal.h"
#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"

namespace kd::checkpoints {

using namespace detail;

std::vector<CheckpointInfo> Checkpointer::probe() const { return probe_after(-1); }

std::vector<CheckpointInfo> Checkpointer::probe_after(int64_t after) const {
  std::vector<CheckpointInfo> out;
  for (const auto& name : fs_->list(directory_)) {
    if (auto step = step_of(name); step && *step > after) {
      const std::string path = directory_ + "/" + name;
      out.push_back({*step, path, verify_checkpoint(*fs_, path)});
    }
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step > b.step; });
  return out;
}

std::optional<CheckpointInfo> Checkpointer::latest_valid() const {
  return choose(probe(), std::nullopt, [](const CheckpointInfo&) {});
}

std::optional<CheckpointInfo> Checkpointer::choose(const std::vector<CheckpointInfo>& probed,
                                                   std::optional<int64_t> step, const Use& use, const Skip& skip) {
  for (const auto& info : probed) {
    if (step) {
      if (info.step != *step) continue;
      use(info);
      return info;
    }
    if (!info.valid()) {
      if (skip) skip(info, info.problem);
      continue;
    }
    try {
      use(info);
      return info;
    } catch (const CorruptionError& e) {
      if (skip) skip(info, e.what());
    }
  }
  return std::nullopt;
}

std::optional<CheckpointInfo> Checkpointer::choose(std::optional<int64_t> step, const Use& use,
                                                   const Skip& skip) const {
  // Enough listings for a run that prunes a checkpoint at every look of this reader.
  constexpr int kMaxListings = 100;
  std::set<int64_t> reported;  // damaged ones, reported once
  std::set<int64_t> reread;    // read again once: the run saved the same step again meanwhile
  std::optional<std::string> vanished_step;
  for (int listing = 0; listing < kMaxListings; ++listing) {
    bool vanished = false;
    for (const CheckpointInfo& info : probe()) {
      if ((step && info.step != *step) || reported.count(info.step)) continue;
      try {
        if (!step && !info.valid()) throw CorruptionError(info.problem);
        use(info);
        return info;
      } catch (const Error& e) {
        const bool gone = !fs_->exists(info.path);  // pruned between the listing and the reading
        const bool unreadable = dynamic_cast<const CorruptionError*>(&e) != nullptr;
        if (gone || (unreadable && reread.insert(info.step).second && verify_checkpoint(*fs_, info.path).empty())) {
          vanished = true;
          if (step && gone) vanished_step = info.path;
          break;
        }
        if (step || !unreadable) throw;
        reported.insert(info.step);
        if (skip) skip(info, info.valid() ? e.what() : info.problem);
      }
    }
    if (!vanished) break;
  }
  if (vanished_step) {
    throw ConfigError("checkpoint \"" + *vanished_step +
                      "\" was deleted while it was read: the run writing this workdir keeps only its newest "
                      "checkpoints (checkpointer.max_to_keep); leave out the step for the newest one");
  }
  return std::nullopt;
}

}  // namespace kd::checkpoints
