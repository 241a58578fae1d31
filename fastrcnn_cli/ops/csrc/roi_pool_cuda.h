// The interface between the CUDA host code (roi_pool_cuda.cpp, compiled by the C++ compiler with ATen) and the
// kernels (roi_pool_cuda.cu, compiled by nvcc without ATen, so that nvcc never parses the heavy torch headers).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace fastrcnn {
namespace cuda {

enum class DType { Float, Double, Half, BFloat16 };

// input: channels-last, element (n, c, h, w) at n * sn + h * sh + w * sw + c. rois: contiguous [K, 5] of the
// input's dtype. out: contiguous [K, C, ph, pw] of the input's dtype; argmax likewise, int32, or null for
// inference (then no argmax is computed).
cudaError_t launch_roi_pool_forward(
    DType dtype,
    const void* input,
    int64_t sn,
    int64_t sh,
    int64_t sw,
    const void* rois,
    double spatial_scale,
    int64_t num_rois,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    void* out,
    int32_t* argmax,
    cudaStream_t stream);

// grad: [K, C, ph, pw] with the given strides; argmax: contiguous [K, C, ph, pw]. grad_acc: zero-filled,
// contiguous [N, H, W, C] (channels-last accumulator) of float for half and bfloat16, else of the grad's dtype.
cudaError_t launch_roi_pool_backward(
    DType dtype,
    const void* grad,
    int64_t gn,
    int64_t gc,
    int64_t gh,
    int64_t gw,
    const int32_t* argmax,
    const void* rois,
    int64_t num_rois,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    void* grad_acc,
    cudaStream_t stream);

}  // namespace cuda
}  // namespace fastrcnn
