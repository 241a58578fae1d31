// Argument checks shared by the CPU and CUDA host code (not by nvcc: this header uses ATen).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "error_message.h"

namespace fastrcnn {


// Scaled RoI coordinates beyond this are refused: the int arithmetic of the bins must not overflow.
constexpr double kMaxScaledCoordinate = 268435456.0;  // 2^28

inline void check_pooled_size(int64_t pooled_height, int64_t pooled_width) {
  TORCH_CHECK_VALUE(
      pooled_height > 0 && pooled_width > 0 && pooled_height <= 65536 && pooled_width <= 65536,
      message("roi_pool: the output size must be positive, got ", pooled_height, " x ", pooled_width));
}

inline void check_forward_args(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width) {
  TORCH_CHECK_VALUE(
      input.dim() == 4, message("roi_pool: input must be a [N, C, H, W] tensor, got ", input.dim(), " dimensions"));
  TORCH_CHECK_VALUE(
      rois.dim() == 2 && rois.size(1) == 5,
      message("roi_pool: rois must be a [K, 5] tensor of (batch_index, x1, y1, x2, y2), got shape ", rois.sizes()));
  TORCH_CHECK_VALUE(
      input.scalar_type() == rois.scalar_type(),
      message("roi_pool: input and rois must have the same dtype, got ", input.scalar_type(), " and ",
      rois.scalar_type()));
  TORCH_CHECK_VALUE(
      input.device() == rois.device(),
      message("roi_pool: input and rois must be on the same device, got ", input.device(), " and ", rois.device()));
  TORCH_CHECK_VALUE(
      std::isfinite(spatial_scale), message("roi_pool: spatial_scale must be finite, got ", spatial_scale));
  check_pooled_size(pooled_height, pooled_width);
  TORCH_CHECK_VALUE(
      input.size(2) * input.size(3) <= std::numeric_limits<int32_t>::max() &&
          input.size(1) <= std::numeric_limits<int32_t>::max() &&
          rois.size(0) <= std::numeric_limits<int32_t>::max(),
      message("roi_pool: input or rois too large (argmax is int32), got input ", input.sizes(), " and ",
      rois.size(0), " rois"));
}

inline void check_backward_args(
    const at::Tensor& grad,
    const at::Tensor& rois,
    const at::Tensor& argmax,
    int64_t pooled_height,
    int64_t pooled_width,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width) {
  check_pooled_size(pooled_height, pooled_width);
  TORCH_CHECK_VALUE(
      rois.dim() == 2 && rois.size(1) == 5,
      message("roi_pool_backward: rois must be a [K, 5] tensor, got shape ", rois.sizes()));
  const int64_t num_rois = rois.size(0);
  TORCH_CHECK_VALUE(
      grad.dim() == 4 && grad.size(0) == num_rois && grad.size(1) == channels &&
          grad.size(2) == pooled_height && grad.size(3) == pooled_width,
      message("roi_pool_backward: grad must have shape [", num_rois, ", ", channels, ", ", pooled_height, ", ",
      pooled_width, "], got ", grad.sizes()));
  TORCH_CHECK_VALUE(
      argmax.sizes() == grad.sizes() && argmax.scalar_type() == at::kInt,
      message("roi_pool_backward: argmax must be an int32 tensor shaped like grad, got ", argmax.scalar_type(), " ",
      argmax.sizes()));
  TORCH_CHECK_VALUE(
      grad.scalar_type() == rois.scalar_type(),
      message("roi_pool_backward: grad and rois must have the same dtype, got ", grad.scalar_type(), " and ",
      rois.scalar_type()));
  TORCH_CHECK_VALUE(
      grad.device() == rois.device() && grad.device() == argmax.device(),
      "roi_pool_backward: grad, rois and argmax must be on the same device");
  TORCH_CHECK_VALUE(
      batch_size >= 0 && channels >= 0 && height >= 0 && width >= 0 &&
          height * width <= std::numeric_limits<int32_t>::max(),
      message("roi_pool_backward: bad input size [", batch_size, ", ", channels, ", ", height, ", ", width, "]"));
}

// Every RoI must name an image of the batch, and its scaled corners must be finite and not huge.
// rois: a contiguous [K, 5] CPU tensor of type T, scale: spatial_scale as T. Raises ValueError.
template <typename T>
void check_rois_cpu(const T* rois, int64_t num_rois, int64_t batch_size, T scale) {
  for (int64_t k = 0; k < num_rois; ++k) {
    const T* r = rois + k * 5;
    const double b = static_cast<double>(r[0]);
    // C++ converts the float batch index to int by truncation, as Caffe and torchvision do.
    TORCH_CHECK_VALUE(
        b > -1.0 && b < static_cast<double>(batch_size),
        message("roi_pool: rois[", k, ", 0] = ", b, " is not a batch index of the input (batch size ", batch_size,
        ")"));
    for (int j = 1; j < 5; ++j) {
      const double v = static_cast<double>(static_cast<T>(r[j] * scale));  // as the kernel computes it
      TORCH_CHECK_VALUE(
          std::abs(v) < kMaxScaledCoordinate,
          message("roi_pool: rois[", k, "] has a non-finite or huge coordinate (", static_cast<double>(r[j]), ")"));
    }
  }
}

}  // namespace fastrcnn
