// Adding "where" to errors raised inside user-configured components (internal).
#pragma once

#include <string>

#include <c10/util/Exception.h>

#include "trainer/common/error.h"

namespace kd::train::detail {

// Runs `fn`; an error on the way out is re-raised as "<what> failed for <kind> '<name>': ..."
// (LibTorch's own errors, e.g. shape mismatches, become kd::Error with their first line).
template <typename Fn>
auto with_context(const char* what, const char* kind, const std::string& name, Fn&& fn) {
  try {
    return fn();
  } catch (Error& e) {
    e.add_context(std::string(what) + " failed for " + kind + " '" + name + "'");
    throw;
  } catch (const c10::Error& e) {
    throw Error(std::string(what) + " failed for " + kind + " '" + name +
                "': " + e.msg().substr(0, e.msg().find('\n')));
  }
}

}  // namespace kd::train::detail
