// Adding "where" to errors raised inside user-configured components (internal).
#pragma once

#include <string>

#include <c10/util/Exception.h>

#include "trainer/common/error.h"

namespace kd::train::detail {

// Runs `fn`; an error on the way out is re-raised as
// "<what> failed for <kind> '<group>/<name>': ..." (LibTorch's own errors, e.g. shape
// mismatches, become kd::Error with their first line). The label is built only on error: this
// wraps every component call of every step.
template <typename Fn>
auto with_context(const char* what, const char* kind, const char* group, const std::string& name, Fn&& fn) {
  const auto label = [&] { return std::string(*group ? std::string(group) + "/" : "") + name; };
  try {
    return fn();
  } catch (Error& e) {
    e.add_context(std::string(what) + " failed for " + kind + " '" + label() + "'");
    throw;
  } catch (const c10::Error& e) {
    throw Error(std::string(what) + " failed for " + kind + " '" + label() +
                "': " + e.msg().substr(0, e.msg().find('\n')));
  }
}

}  // namespace kd::train::detail
