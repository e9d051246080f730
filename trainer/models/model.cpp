#include "trainer/models/model.h"

#include <torch/nn/modules/container/sequential.h>

#include "trainer/common/error.h"

namespace kd::models {
namespace {

thread_local IntermsRecorder* current_recorder = nullptr;

}  // namespace

Model::Model(const config::Node& options, std::vector<std::pair<std::string, std::string>> default_inputs) {
  const auto given = options.find("inputs");
  if (given && !given->is_null() && !given->is_map()) {
    throw ConfigError(given->where() +
                      ": model inputs must be a map of argument -> path, e.g. "
                      "{x: batch.image}");
  }
  for (auto& [name, default_path] : default_inputs) {
    std::string text = default_path;
    if (given) text = given->get_string(name, default_path);
    try {
      input_keys_.emplace_back(name, Path::parse(text));
    } catch (Error& e) {
      e.add_context(options.where() + ": model input \"" + name + "\"");
      throw;
    }
  }
  if (given) given->check_unknown_keys();
}

void Model::sow(const std::string& name, const torch::Tensor& value) const {
  if (auto* recorder = IntermsRecorder::current()) recorder->record(this, name, value);
}

torch::Tensor Model::run_recorded(torch::nn::SequentialImpl& seq, torch::Tensor x) const {
  IntermsRecorder* recorder = IntermsRecorder::current();
  for (auto& child : seq) {
    x = child.forward(x);
    if (recorder) recorder->record(child.ptr().get(), "output", x);
  }
  return x;
}

IntermsRecorder::IntermsRecorder(const torch::nn::Module& root) : previous_(current_recorder) {
  for (const auto& item : root.named_modules(/*name_prefix=*/"", /*include_self=*/true)) {
    paths_.emplace_back(item.value().get(), item.key().empty() ? Path() : Path::from_dotted(item.key()));
  }
  current_recorder = this;
}

IntermsRecorder::~IntermsRecorder() { current_recorder = previous_; }

IntermsRecorder* IntermsRecorder::current() { return current_recorder; }

void IntermsRecorder::record(const torch::nn::Module* module, const std::string& name, const torch::Tensor& value) {
  for (const auto& [m, path] : paths_) {
    if (m == module) {
      interms_ = interms_.set(path.key(name), value);
      return;
    }
  }
  // A module outside the model (e.g. a helper built on the fly) records at the top level.
  interms_ = interms_.set(Path().key(name), value);
}

}  // namespace kd::models
