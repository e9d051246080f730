// Fuzzes reading a checkpoint made by someone else: the checksums are always valid (an attacker
// writes the manifest too), the content is the input. A small real checkpoint is the template;
// the input's first byte chooses the file it replaces (meta.json, MANIFEST.json as is,
// config.yaml, or state.safetensors) and the rest is that file. Restoring must end in a
// kd::Error or in a model whose tensors kept their shapes.
//
// (This target found that LibTorch 1.13's TorchScript archive reader aborts the process on
// crafted archives, the input kept in corpus/state-pt-aborts-libtorch/; checkpoints therefore
// keep their tensors in state.safetensors, which kd reads and checks itself.)
#include <unistd.h>
#include <xxhash.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "trainer/checkpoints/checkpointer.h"
#include "trainer/common/error.h"

namespace fs = std::filesystem;

namespace {

struct Template {
  fs::path root, ckpt;
  torch::nn::Linear model{3, 2};
  std::unique_ptr<torch::optim::Adam> optimizer;
};

Template& make_template() {
  static Template* t = [] {
    auto* out = new Template();
    out->root = fs::temp_directory_path() / ("kd_checkpoint_fuzz_" + std::to_string(getpid()));
    fs::remove_all(out->root);
    out->optimizer = std::make_unique<torch::optim::Adam>(out->model->parameters(), torch::optim::AdamOptions(0.1));
    out->model->forward(torch::ones({4, 3})).sum().backward();
    out->optimizer->step();
    kd::checkpoints::Checkpointer saver((out->root / "template").string(), {});
    kd::checkpoints::Snapshot s;
    s.step = 1;
    s.model = out->model.get();
    s.optimizer = out->optimizer.get();
    s.aux = kd::Tree::dict({{"loss", kd::Tree::dict({{"total", torch::tensor(1.5)}, {"count", int64_t{3}}})}});
    s.config_yaml = "seed: 0\n";
    out->ckpt = saver.save(s);
    return out;
  }();
  return *t;
}

std::string hex(const std::string& data) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(XXH3_64bits(data.data(), data.size())));
  return buf;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Template& t = make_template();
  static const char* kFiles[] = {"meta.json", "MANIFEST.json", "config.yaml", "state.safetensors"};
  const std::string file = kFiles[data[0] % 4];
  const std::string content(reinterpret_cast<const char*>(data + 1), size - 1);
  const fs::path work = t.root / "work" / "ckpt_1";
  fs::remove_all(work.parent_path());
  fs::create_directories(work.parent_path());
  fs::copy(t.ckpt, work);
  std::ofstream(work / file, std::ios::binary | std::ios::trunc) << content;
  if (file != "MANIFEST.json") {
    try {
      auto manifest = nlohmann::json::parse(std::ifstream(work / "MANIFEST.json"));
      manifest["files"][file] = {{"size", content.size()}, {"xxh3_64", hex(content)}};
      std::ofstream(work / "MANIFEST.json", std::ios::trunc) << manifest.dump();
    } catch (const nlohmann::json::exception&) {
      std::abort();  // the template's manifest is kd's own
    }
  }
  kd::checkpoints::Checkpointer reader(work.parent_path().string(), {});
  for (const auto& info : reader.probe()) {
    if (!info.valid()) continue;
    try {
      torch::nn::Linear model(3, 2);  // fresh each time: a restore must not depend on the last one
      torch::optim::Adam optimizer(model->parameters(), torch::optim::AdamOptions(0.1));
      kd::checkpoints::Snapshot s;
      s.model = model.get();
      s.optimizer = &optimizer;
      reader.restore(info.path, s);
      if (model->weight.sizes() != torch::IntArrayRef({2, 3}) || model->bias.sizes() != torch::IntArrayRef({2})) {
        std::abort();  // a restore that succeeded must leave the model's shapes alone
      }
    } catch (const kd::Error&) {
    }
    try {
      (void)kd::checkpoints::read_checkpoint_tensors(info.path, "params");
    } catch (const kd::Error&) {
    }
  }
  return 0;
}
