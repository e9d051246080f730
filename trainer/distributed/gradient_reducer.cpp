// GradientReducer (distributed.h): gradients averaged over the ranks in buckets.
#include <torch/torch.h>

#include "trainer/common/error.h"
#include "trainer/distributed/distributed.h"

namespace kd::distributed {

struct GradientReducer::Impl {
  struct Slot {
    torch::Tensor param;
    int64_t offset;
  };
  struct Bucket {
    torch::Tensor buffer;  // flat, one dtype and device
    std::vector<Slot> slots;
  };
  std::shared_ptr<ProcessGroup> group;
  std::vector<Bucket> buckets;
  int64_t elements = 0;
};

GradientReducer::GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<torch::Tensor> params,
                                 int64_t bucket_bytes)
    : impl_(std::make_unique<Impl>()) {
  impl_->group = std::move(group);
  // Parameters in order, a new bucket when the dtype or device changes or the bucket is full.
  std::map<std::tuple<int, int, int>, std::size_t> open;  // (dtype, device type, index) -> bucket
  std::vector<int64_t> sizes;
  for (auto& p : params) {
    if (!p.requires_grad()) continue;
    const auto key = std::make_tuple(static_cast<int>(p.scalar_type()), static_cast<int>(p.device().type()),
                                     static_cast<int>(p.device().index()));
    auto it = open.find(key);
    if (it == open.end() || sizes[it->second] * static_cast<int64_t>(p.element_size()) >= bucket_bytes) {
      impl_->buckets.push_back({});
      sizes.push_back(0);
      it = open.insert_or_assign(key, impl_->buckets.size() - 1).first;
    }
    auto& bucket = impl_->buckets[it->second];
    bucket.slots.push_back({p, sizes[it->second]});
    sizes[it->second] += p.numel();
    impl_->elements += p.numel();
  }
  for (std::size_t i = 0; i < impl_->buckets.size(); ++i) {
    const auto& first = impl_->buckets[i].slots.front().param;
    impl_->buckets[i].buffer = torch::empty({sizes[i]}, first.options().requires_grad(false));
  }
}

GradientReducer::~GradientReducer() = default;

int64_t GradientReducer::num_buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }
int64_t GradientReducer::num_elements() const { return impl_->elements; }

std::vector<double> GradientReducer::reduce(const std::vector<double>& flags) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  tensors.reserve(impl_->buckets.size() + 1);
  for (auto& bucket : impl_->buckets) {
    for (const auto& slot : bucket.slots) {
      torch::Tensor view = bucket.buffer.narrow(0, slot.offset, slot.param.numel()).view(slot.param.sizes());
      const torch::Tensor& g = slot.param.grad();
      if (g.defined()) {
        view.copy_(g);
      } else {
        view.zero_();
      }
    }
    tensors.push_back(bucket.buffer);
  }
  const auto device = impl_->buckets.empty() ? c10::Device(c10::kCPU) : impl_->buckets.front().buffer.device();
  torch::Tensor flag_tensor =
      torch::tensor(flags.empty() ? std::vector<double>{0.0} : flags, torch::kDouble).to(device);
  tensors.push_back(flag_tensor);
  impl_->group->all_reduce_sum(tensors, "the all-reduce of the gradients");

  const double scale = 1.0 / impl_->group->size();
  for (auto& bucket : impl_->buckets) {
    bucket.buffer.mul_(scale);
    for (const auto& slot : bucket.slots) {
      torch::Tensor view = bucket.buffer.narrow(0, slot.offset, slot.param.numel()).view(slot.param.sizes());
      torch::Tensor g = slot.param.grad();
      if (g.defined()) {
        g.copy_(view);
      } else {
        slot.param.mutable_grad() = view.clone();
      }
    }
  }
  const torch::Tensor summed = flag_tensor.cpu();
  const double* sums = summed.data_ptr<double>();
  return std::vector<double>(sums, sums + flags.size());
}

}  // namespace kd::distributed
