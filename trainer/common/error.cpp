#include "trainer/common/error.h"

namespace kd {

void Error::add_context(const std::string& context) { message_ = context + ": " + message_; }

}  // namespace kd
