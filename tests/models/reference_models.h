// The parity tests' way to a reference implementation: a Python script (torchvision's or a
// nanoGPT-style module, with KD_PYTHON) writes its random weights to DIR/weights.safetensors and
// its inputs and outputs to DIR/io.safetensors; kd's model loads the weights strictly.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <torch/torch.h>
#include <catch2/catch.hpp>

#include "tests/step/test_helpers.h"
#include "trainer/checkpoints/init_transform.h"
#include "trainer/checkpoints/safetensors.h"
#include "trainer/io/file_system.h"

namespace kd::testing {

// Runs `script` with `args` (DIR first) and returns the tensors it saved in DIR/io.safetensors.
inline std::map<std::string, torch::Tensor> run_reference(const std::filesystem::path& dir, const char* script,
                                                          const std::string& args) {
  std::ofstream(dir / "write.py") << script;
  const std::string command =
      std::string(KD_PYTHON) + " " + (dir / "write.py").string() + " " + dir.string() + " " + args;
  INFO(command);
  REQUIRE(std::system(command.c_str()) == 0);
  std::map<std::string, torch::Tensor> io;
  for (auto& [key, t] : checkpoints::tensors_from_safetensors(
           io::posix_file_system()->read_file((dir / "io.safetensors").string()), "io")) {
    io[key] = t;
  }
  return io;
}

// DIR/weights.safetensors loaded into `model` (strict, its tied weights under either name): the report.
inline std::string load_reference_weights(models::Model& model, const std::filesystem::path& dir) {
  return checkpoints::apply_init_transform(yaml("{weights: " + (dir / "weights.safetensors").string() + "}"), model,
                                           nullptr, model.tied_weights());
}

}  // namespace kd::testing
