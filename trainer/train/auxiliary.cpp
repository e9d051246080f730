#include "trainer/train/auxiliary.h"

#include "trainer/common/error.h"
#include "trainer/train/context.h"

namespace kd::train {

Path Auxiliary::key(const config::Node& options, const std::string& name,
                    const std::string& default_path) {
  std::string text = default_path;
  if (auto node = options.find(name); node && !node->is_null()) {
    text = node->as_string();
  } else if (default_path.empty()) {
    throw ConfigError(options.where() + ": missing the key \"" + name +
                      "\": the path in the context to read it from (e.g. \"batch." + name + "\")");
  }
  Path path;
  try {
    path = Path::parse(text);
  } catch (Error& e) {
    e.add_context(options.where() + ": key \"" + name + "\"");
    throw;
  }
  keys_.emplace_back(name, path);
  return path;
}

std::optional<Path> Auxiliary::optional_key(const config::Node& options, const std::string& name) {
  auto node = options.find(name);
  if (!node || node->is_null()) return std::nullopt;
  return key(options, name);
}

torch::Tensor Auxiliary::read(const Context& ctx, const Path& path) {
  const Tree value = ctx.get(path);
  if (!value.is_tensor()) {
    throw TypeError("\"" + path.str() + "\" must be a tensor, but the context holds " + value.describe());
  }
  return value.tensor();
}

}  // namespace kd::train
