// The ImageFolder data source: a directory of a user's pictures, a folder per class.
#include <algorithm>
#include <filesystem>
#include <limits>
#include <set>

#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/common/suggest.h"
#include "trainer/data/csv_source_internal.h"
#include "trainer/data/image_files.h"
#include "trainer/data/image_folder_internal.h"
#include "trainer/data/image_transforms_internal.h"
#include "trainer/io/random_access_file.h"

namespace kd::data {
namespace {

namespace fs = std::filesystem;

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// `image` uint8 [H, W, C] with `channels` channels: gray repeated to RGB, RGB to gray by ITU-R
// BT.601 luma (as PIL's convert("L")), alpha dropped.
torch::Tensor with_channels(torch::Tensor image, int64_t channels) {
  if (image.size(2) == 2 || image.size(2) == 4) image = image.narrow(2, 0, image.size(2) - 1);  // no alpha
  if (image.size(2) == channels) return image;
  if (channels == 3) return image.expand({image.size(0), image.size(1), 3}).contiguous();
  const torch::Tensor f = image.to(torch::kFloat);
  const torch::Tensor luma = f.select(2, 0) * 0.299 + f.select(2, 1) * 0.587 + f.select(2, 2) * 0.114;
  return luma.round().clamp(0, 255).to(torch::kByte).unsqueeze(2);
}

}  // namespace

ImageFolder::ImageFolder(const config::Node& o)
    : path_(o.get_string("path")),
      where_(o.child("path").where()),
      channels_(o.get_int("channels", 3)),
      split_(o.get_string("split", "all")),
      test_fraction_(o.get_double_in("test_fraction", 0.2, 0.0, 1.0)),
      split_seed_(o.get_int_in("split_seed", 0, 0, std::numeric_limits<int64_t>::max())) {
  if (auto size = o.find("size"); size && !size->is_null()) {
    const auto s = o.get_int_list_in("size", std::nullopt, 1, 1 << 16);
    if (s.size() != 2) throw ConfigError(size->where() + ": size must be [height, width]");
    size_ = {s[0], s[1]};
  }
  if (channels_ != 1 && channels_ != 3) {
    throw ConfigError(o.child("channels").where() + ": channels must be 1 (gray) or 3 (RGB)");
  }
  if (split_ != "all" && split_ != "train" && split_ != "test") {
    throw ConfigError(o.child("split").where() + ": split must be all, train or test, got \"" + split_ + "\"");
  }
  if (auto classes = o.find("classes"); classes && !classes->is_null()) classes_ = o.get_string_list("classes");
}

void ImageFolder::list_files() const {
  std::call_once(listed_, [&] {
    std::error_code ec;
    if (!fs::is_directory(path_, ec)) {
      throw IOError(where_ + ": \"" + path_ + "\" is not a directory (ImageFolder reads PATH/<class>/<image>.png|jpg)");
    }
    std::vector<std::string> folders;
    for (const auto& entry : fs::directory_iterator(path_)) {
      const std::string name = entry.path().filename().string();
      if (entry.is_directory() && name.front() != '.') folders.push_back(name);
    }
    std::sort(folders.begin(), folders.end());
    if (folders.empty()) throw ConfigError(where_ + ": \"" + path_ + "\" has no class folders (PATH/<class>/<image>)");
    std::vector<std::string> order = classes_.empty() ? folders : classes_;
    for (const auto& c : order) {
      if (!std::binary_search(folders.begin(), folders.end(), c)) {
        throw ConfigError(where_ + ": classes names \"" + c + "\", but \"" + path_ + "\" has no such folder (it has " +
                          join_names(folders) + ")");
      }
    }
    // Every image file, class by class, in name order: the same list on every machine.
    std::vector<std::pair<std::string, int64_t>> files;
    for (std::size_t k = 0; k < order.size(); ++k) {
      std::vector<std::string> names;
      for (const auto& entry : fs::directory_iterator(fs::path(path_) / order[k])) {
        if (entry.is_regular_file() && is_image_file(entry.path()) && entry.path().filename().string().front() != '.') {
          names.push_back(entry.path().string());
        }
      }
      if (names.empty())
        throw ConfigError(where_ + ": the class folder \"" + order[k] + "\" holds no .png or .jpg file");
      std::sort(names.begin(), names.end());
      for (auto& n : names) files.emplace_back(std::move(n), static_cast<int64_t>(k));
    }
    const std::vector<int64_t> kept = split_ == "all"
                                          ? split_rows(static_cast<int64_t>(files.size()), 0.0, 0, false)
                                          : split_rows(static_cast<int64_t>(files.size()), test_fraction_,
                                                       static_cast<uint64_t>(split_seed_), split_ == "test");
    if (kept.empty()) throw ConfigError(where_ + ": split " + split_ + " of \"" + path_ + "\" holds no images");
    for (const int64_t i : kept) files_.push_back(std::move(files[static_cast<std::size_t>(i)]));
    classes_used_ = order;
  });
}

int64_t ImageFolder::size() const {
  list_files();
  return static_cast<int64_t>(files_.size());
}

std::string ImageFolder::name_of(int64_t index) const {
  list_files();
  return "\"" + files_.at(static_cast<std::size_t>(index)).first + "\"";
}

Tree ImageFolder::get(int64_t index) const {
  list_files();
  const auto& [file, label] = files_.at(static_cast<std::size_t>(index));
  const auto in = io::RandomAccessFile::open(file);  // an IOError naming the file
  const std::string bytes = in->read(0, in->size());
  torch::Tensor image = with_channels(decode_image(bytes, file), channels_);
  if (size_) image = resize_images(image.unsqueeze(0), *size_, "bilinear", /*antialias=*/true).squeeze(0);
  return Tree::dict({{"image", image}, {"label", torch::scalar_tensor(label, torch::kLong)}});
}

std::string ImageFolder::describe() const {
  std::string out = "ImageFolder " + path_;
  if (split_ != "all") out += " (split " + split_ + ")";
  for (std::size_t i = 0; i < classes_used_.size(); ++i) {
    out.append(i ? ", " : ", classes ").append(classes_used_[i]).append("=").append(std::to_string(i));
  }
  return out;
}

}  // namespace kd::data
