// The ImageFolder data source (registered as `ImageFolder`): a user's own pictures, one folder
// per class, as torchvision's ImageFolder reads them.
//
//   train_ds: {type: ImageFolder, path: pictures, size: [64, 64], channels: 3, split: train}
//
//   pictures/cat/1.jpg, pictures/cat/2.png, pictures/dog/a.jpeg, ...
//
// Gives batch.image (uint8 [N, H, W, C], channels last, C also when 1) and batch.label (int64:
// the class folders in sorted order, or in the order of `classes`). The file list is made at
// start; each picture is decoded when a batch needs it, on the pipeline's workers (nothing is
// held in memory, so the folder may be larger than it). PNG and JPEG files are read (other
// files are skipped); gray, RGB and RGBA become `channels` (1 or 3); `size` resizes each image
// as it is read (bilinear, antialiased); otherwise the transforms give the examples of a batch
// one size (a Resize, a crop), or the pictures have one size already.
// `split: train | test`, `test_fraction`, `split_seed`: as Csv's, over the sorted file list.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "trainer/config/node.h"
#include "trainer/data/source.h"

namespace kd::data {

class ImageFolder : public Source {
 public:
  explicit ImageFolder(const config::Node& options);
  bool random_access() const override { return true; }
  int64_t size() const override;
  Tree get(int64_t index) const override;
  std::string name_of(int64_t index) const override;
  std::string describe() const override;

 private:
  // Lists the files once (the split's, in a fixed order) and sets classes_used_.
  void list_files() const;

  std::string path_, where_;
  std::optional<std::pair<int64_t, int64_t>> size_;
  int64_t channels_ = 3;
  std::vector<std::string> classes_;
  std::string split_;
  double test_fraction_;
  int64_t split_seed_;
  mutable std::once_flag listed_;
  mutable std::vector<std::pair<std::string, int64_t>> files_;  // (file, label) of the split
  mutable std::vector<std::string> classes_used_;
};

}  // namespace kd::data
