// The ImageFolder data source (registered as `ImageFolder`): a user's own pictures, one folder
// per class, as torchvision's ImageFolder reads them.
//
//   train_ds: {type: ImageFolder, path: pictures, size: [64, 64], channels: 3, split: train}
//
//   pictures/cat/1.jpg, pictures/cat/2.png, pictures/dog/a.jpeg, ...
//
// Gives batch.image (uint8 [N, H, W, C], channels last, C also when 1) and batch.label (int64:
// the class folders in sorted order, or in the order of `classes`). PNG and JPEG files are read
// (other files are skipped); gray, RGB and RGBA become `channels` (1 or 3); `size` resizes each
// image as it is read (bilinear, antialiased), otherwise every image must have one size.
// `split: train | test`, `test_fraction`, `split_seed`: as Csv's, over the sorted file list.
#pragma once

#include <cstdint>
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
  Tree load() const override;
  std::string describe() const override;

 private:
  std::string path_, where_;
  std::optional<std::pair<int64_t, int64_t>> size_;
  int64_t channels_ = 3;
  std::vector<std::string> classes_;
  std::string split_;
  double test_fraction_;
  int64_t split_seed_;
  mutable std::vector<std::string> classes_used_;
};

}  // namespace kd::data
