// A device guard for CUDA in a torch built without CUDA (experiments/fake_cuda.py).
//
// Torch's Python bindings enter a device guard for a tensor's device before many operations
// (indexing, operators such as ~x, factory calls). A CPU-only build registers no guard for
// CUDA, so those calls fail on a fake CUDA tensor ("PyTorch is not linked with support for
// cuda devices") even though the fake tensor never touches a device. This guard does
// nothing and reports device 0 of one. Loading this library registers it; it is loaded only
// into the process that builds kernels for a fake device, never into a simulator's process.
#include <c10/core/impl/DeviceGuardImplInterface.h>

namespace {

using c10::Device;
using c10::DeviceIndex;
using c10::DeviceType;
using c10::Stream;

struct FakeCudaGuard final : public c10::impl::DeviceGuardImplInterface {
  DeviceType type() const override { return DeviceType::CUDA; }
  Device exchangeDevice(Device) const override { return Device(DeviceType::CUDA, 0); }
  Device getDevice() const override { return Device(DeviceType::CUDA, 0); }
  void setDevice(Device) const override {}
  void uncheckedSetDevice(Device) const noexcept override {}
  Stream getStream(Device) const noexcept override {
    return Stream(Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  Stream exchangeStream(Stream) const noexcept override {
    return Stream(Stream::DEFAULT, Device(DeviceType::CUDA, 0));
  }
  DeviceIndex deviceCount() const noexcept override { return 1; }
};

C10_REGISTER_GUARD_IMPL(CUDA, FakeCudaGuard);

}  // namespace
