// Adding "where" to errors raised inside user-configured components (internal).
#pragma once

#include <string>

#include <c10/util/Exception.h>

#include "trainer/common/error.h"
#include "trainer/context/auxiliary.h"

namespace kd::train {
struct Context;
}

namespace kd::train::detail {

// Runs `fn`; an error on the way out is re-raised as
// "<what> failed for <kind> '<group>/<name>': ...<details()>" (LibTorch's own errors, e.g. shape
// mismatches, become kd::Error with their first line). The label and `details` are built only
// on error: this wraps every component call of every step.
template <typename Fn, typename Details>
auto with_context(const char* what, const char* kind, const char* group, const std::string& name, Fn&& fn,
                  Details&& details) {
  const auto label = [&] { return std::string(*group ? std::string(group) + "/" : "") + name; };
  try {
    return fn();
  } catch (Error& e) {
    e.add_context(std::string(what) + " failed for " + kind + " '" + label() + "'" + details());
    throw;
  } catch (const c10::Error& e) {
    throw Error(std::string(what) + " failed for " + kind + " '" + label() + "'" + details() + ": " +
                e.msg().substr(0, e.msg().find('\n')));
  }
}

template <typename Fn>
auto with_context(const char* what, const char* kind, const char* group, const std::string& name, Fn&& fn) {
  return with_context(what, kind, group, name, std::forward<Fn>(fn), [] { return std::string(); });
}

// " (inputs: preds.logits float32[128, 10], batch.label int64[128])": what `aux` read of `ctx`,
// for the errors of with_context.
std::string describe_inputs(const Auxiliary& aux, const Context& ctx);

}  // namespace kd::train::detail
