// RoI max pooling on CUDA: the host side (checks, allocation, stream, registration). The kernels are in
// roi_pool_cuda.cu. This file is part of the separate CUDA library (fastrcnn_roi_pool_cuda), which registers
// only CUDA kernels for the operators that the CPU library defines.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <cmath>
#include <string>

#include "roi_pool_checks.h"
#include "roi_pool_cuda.h"

namespace fastrcnn {
namespace {

cuda::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return cuda::DType::Float;
    case at::kDouble:
      return cuda::DType::Double;
    case at::kHalf:
      return cuda::DType::Half;
    case at::kBFloat16:
      return cuda::DType::BFloat16;
    default:
      TORCH_CHECK_VALUE(false, message("roi_pool: CUDA supports float32, float64, float16 and bfloat16, got ", t));
  }
}

bool stream_is_capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  return cudaStreamIsCapturing(stream, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone;
}

// The same checks as on the CPU (batch index in range, coordinates finite and not huge), done on the device
// with one synchronisation. Skipped while a CUDA graph is being captured (no synchronisation allowed then); the
// kernels never read or write out of bounds whatever the RoIs hold (a RoI naming no image pools zeros).
// Returns the CPU's message for the first bad RoI, or "" if all are good; the caller throws, before it takes a
// device guard (a ValueError thrown from here, under the guard, crashed the process on an H100 with torch 2.11).
std::string rois_problem_cuda(const at::Tensor& rois, int64_t batch_size, double spatial_scale, cudaStream_t stream) {
  if (rois.size(0) == 0 || stream_is_capturing(stream)) {
    return "";
  }
  const at::Tensor b = rois.select(1, 0);
  const at::Tensor b_ok = b.gt(-1).logical_and(b.lt(static_cast<double>(batch_size)));
  const at::Tensor coords_ok = rois.narrow(1, 1, 4).to(at::kDouble).mul(spatial_scale).abs()
                                   .lt(kMaxScaledCoordinate).all(1);
  const at::Tensor good = b_ok.logical_and(coords_ok);
  if (good.all().item<bool>()) {
    return "";
  }
  // the first bad RoI (argmax gives the first maximum), its values read one by one
  const int64_t k = good.logical_not().to(at::kInt).argmax().item<int64_t>();
  const at::Tensor row = rois.select(0, k).to(at::kDouble);
  const double r[5] = {row[0].item<double>(), row[1].item<double>(), row[2].item<double>(),
                       row[3].item<double>(), row[4].item<double>()};
  if (!b_ok[k].item<bool>()) {
    return message("roi_pool: rois[", k, ", 0] = ", r[0], " is not a batch index of the input (batch size ",
                    batch_size, ")");
  }
  int j = 1;
  while (j < 4 && std::abs(r[j] * spatial_scale) < kMaxScaledCoordinate) {
    ++j;
  }
  return message("roi_pool: rois[", k, "] has a non-finite or huge coordinate (", r[j], ")");
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, message(what, ": CUDA kernel launch failed: ", cudaGetErrorString(err)));
}

// Launches the forward into output (and argmax, when given).
void roi_pool_forward_cuda_into(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                                at::Tensor& output, at::Tensor* argmax, cudaStream_t stream) {
  const int64_t channels = input.size(1);
  TORCH_CHECK_VALUE(
      (channels + 31) / 32 <= 65535, message("roi_pool: too many channels for the CUDA kernel (", channels, ")"));
  const at::Tensor x = input.contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_INTERNAL_ASSERT(x.stride(1) == 1 || channels == 1);
  const at::Tensor rois_c = rois.contiguous();
  check_launch(
      cuda::launch_roi_pool_forward(
          kernel_dtype(input.scalar_type()), x.const_data_ptr(), x.stride(0), x.stride(2), x.stride(3),
          rois_c.const_data_ptr(), spatial_scale, rois.size(0), input.size(0), channels, input.size(2),
          input.size(3), output.size(2), output.size(3), output.mutable_data_ptr(),
          argmax ? argmax->mutable_data_ptr<int32_t>() : nullptr, stream),
      "roi_pool");
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cuda(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width) {
  check_forward_args(input, rois, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(input.is_cuda(), message("roi_pool: the CUDA kernel got a tensor on ", input.device()));
  (void)kernel_dtype(input.scalar_type());  // throws for an unsupported dtype
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.get_device()).stream();
  const std::string problem = rois_problem_cuda(rois, input.size(0), spatial_scale, stream);
  TORCH_CHECK_VALUE(problem.empty(), problem);
  const c10::cuda::CUDAGuard guard(input.device());
  at::Tensor output = at::empty({rois.size(0), input.size(1), pooled_height, pooled_width}, input.options());
  at::Tensor argmax = at::empty({rois.size(0), input.size(1), pooled_height, pooled_width}, input.options().dtype(at::kInt));
  if (output.numel() > 0) {
    roi_pool_forward_cuda_into(input, rois, spatial_scale, output, &argmax, stream);
  }
  return std::make_tuple(output, argmax);
}

// Inference: no argmax, and no synchronising RoI check. The kernel never reads out of bounds whatever the RoIs
// hold (a RoI naming no image pools zeros); RoIs are validated where they enter (fastrcnn_cli.ops.roi_pool).
at::Tensor roi_pool_inference_cuda(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width) {
  check_forward_args(input, rois, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(input.is_cuda(), message("roi_pool: the CUDA kernel got a tensor on ", input.device()));
  (void)kernel_dtype(input.scalar_type());  // throws for an unsupported dtype
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(input.get_device()).stream();
  at::Tensor output = at::empty({rois.size(0), input.size(1), pooled_height, pooled_width}, input.options());
  if (output.numel() > 0) {
    roi_pool_forward_cuda_into(input, rois, spatial_scale, output, nullptr, stream);
  }
  return output;
}

at::Tensor roi_pool_backward_cuda(
    const at::Tensor& grad,
    const at::Tensor& rois,
    const at::Tensor& argmax,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width) {
  check_backward_args(grad, rois, argmax, pooled_height, pooled_width, batch_size, channels, height, width);
  TORCH_CHECK_VALUE(grad.is_cuda(), message("roi_pool_backward: the CUDA kernel got a tensor on ", grad.device()));
  const cuda::DType dtype = kernel_dtype(grad.scalar_type());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(grad.get_device()).stream();
  if (grad.numel() != 0 && batch_size * channels * height * width != 0) {
    const std::string problem = rois_problem_cuda(rois, batch_size, spatial_scale, stream);
    TORCH_CHECK_VALUE(problem.empty(), problem);
  }
  const c10::cuda::CUDAGuard guard(grad.device());

  at::Tensor grad_input = at::empty({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0 || grad_input.numel() == 0) {
    return grad_input.zero_();
  }
  const bool low_precision = dtype == cuda::DType::Half || dtype == cuda::DType::BFloat16;
  // channels-last accumulator: the lanes of a warp add to consecutive addresses
  at::Tensor acc = at::zeros(
      {batch_size, height, width, channels}, grad.options().dtype(low_precision ? at::kFloat : grad.scalar_type()));
  const at::Tensor argmax_c = argmax.contiguous();
  const at::Tensor rois_c = rois.contiguous();
  check_launch(
      cuda::launch_roi_pool_backward(
          dtype, grad.const_data_ptr(), grad.stride(0), grad.stride(1), grad.stride(2), grad.stride(3),
          argmax_c.const_data_ptr<int32_t>(), rois_c.const_data_ptr(), rois.size(0), batch_size, channels,
          height, width, pooled_height, pooled_width, acc.mutable_data_ptr(), stream),
      "roi_pool_backward");
  grad_input.copy_(acc.permute({0, 3, 1, 2}));
  return grad_input;
}

}  // namespace
}  // namespace fastrcnn

TORCH_LIBRARY_IMPL(fastrcnn, CUDA, m) {
  m.impl("roi_pool", &fastrcnn::roi_pool_forward_cuda);
  m.impl("roi_pool_inference", &fastrcnn::roi_pool_inference_cuda);
  m.impl("roi_pool_backward", &fastrcnn::roi_pool_backward_cuda);
}
