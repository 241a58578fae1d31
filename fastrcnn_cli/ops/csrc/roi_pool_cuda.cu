// RoI max pooling kernels for CUDA (forward and backward). Deliberately free of ATen: nvcc compiles only these
// kernels and the small c10 number types; the tensor handling is in roi_pool_cuda.cpp.
//
// Both kernels run one thread block per (RoI, block of 32 channels): a warp's 32 lanes are 32 consecutive
// channels at the same (h, w) of the channels-last input, so every load of a window cell is one coalesced
// transaction, and the 8 warps of a block share the RoI's bins. Results (or gradients) pass through shared
// memory so that the [K, C, ph, pw] output is written (or read) in contiguous runs.
//
// The backward adds into a channels-last accumulator with atomics (gpuAtomicAdd): consecutive lanes add to
// consecutive addresses. Half and bfloat16 accumulate in float (more accurate than torchvision, which adds in
// half). The order of the atomic additions is not fixed: the CUDA backward is not bitwise deterministic.
#include <cuda_runtime.h>

#include <ATen/cuda/Atomic.cuh>  // gpuAtomicAdd (header-only, no ATen tensor headers)
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "roi_pool_cuda.h"
#include "roi_pool_geometry.h"

namespace fastrcnn {
namespace cuda {
namespace {

using namespace roi_pool_detail;

constexpr int kLanes = 32;  // channels per block
constexpr int kWarps = 8;   // warps per block
constexpr int kTile = 64;   // bins held in shared memory at once
constexpr int kPad = kLanes + 1;  // row pitch of the shared tiles (no bank conflicts when transposing)

// WithIndex = false (roi_pool_inference): the same maxima, no argmax kept or written (argmax is null).
template <typename T, bool WithIndex>
__global__ void __launch_bounds__(kLanes * kWarps) roi_pool_forward_kernel(
    const T* __restrict__ x,
    int64_t sn,
    int64_t sh,
    int64_t sw,
    const T* __restrict__ rois,
    T scale,
    int batch_size,
    int channels,
    int height,
    int width,
    int pooled_height,
    int pooled_width,
    T* __restrict__ out,
    int32_t* __restrict__ argmax) {
  // raw storage: c10::Half / BFloat16 have constructors, which __shared__ variables may not
  __shared__ __align__(16) unsigned char tile_v_raw[kTile * kPad * sizeof(T)];
  __shared__ int32_t tile_i[kTile * kPad];
  T* tile_v = reinterpret_cast<T*>(tile_v_raw);

  const int64_t k = blockIdx.x;
  const int c0 = blockIdx.y * kLanes;
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int c = c0 + lane;
  const int nc = min(kLanes, channels - c0);
  const int P = pooled_height * pooled_width;

  const T* roi = rois + k * 5;
  const int b = static_cast<int>(roi[0]);  // truncation, as Caffe; the host checked the range
  const bool valid = b >= 0 && b < batch_size;
  const RoIGeometry<T> g = roi_geometry<T>(roi, scale, pooled_height, pooled_width);
  const T* xc = x + (valid ? b : 0) * sn + (c < channels ? c : 0);

  for (int p0 = 0; p0 < P; p0 += kTile) {
    const int np = min(kTile, P - p0);
    for (int pp = warp; pp < np; pp += kWarps) {
      const int p = p0 + pp;
      const int i = p / pooled_width;
      const int j = p - i * pooled_width;
      int hs, he, ws, we;
      bin_range<T>(i, g.bin_h, g.start_h, height, hs, he);
      bin_range<T>(j, g.bin_w, g.start_w, width, ws, we);
      T best;
      int32_t where = -1;
      if (!valid || he <= hs || we <= ws) {
        best = static_cast<T>(0);  // an empty bin pools nothing
      } else {
        best = lowest<T>();
        if (c < channels) {
          for (int h = hs; h < he; ++h) {
            const T* row = xc + h * sh;
            for (int w = ws; w < we; ++w) {
              const T v = row[w * sw];
              if (v > best) {  // NaN never wins; the first maximum stays
                best = v;
                if (WithIndex) where = h * width + w;
              }
            }
          }
        }
      }
      tile_v[pp * kPad + lane] = best;
      if (WithIndex) tile_i[pp * kPad + lane] = where;
    }
    __syncthreads();
    for (int t = warp * kLanes + lane; t < nc * np; t += kLanes * kWarps) {
      const int ci = t / np;
      const int pp = t - ci * np;
      const int64_t o = (k * channels + c0 + ci) * P + p0 + pp;
      out[o] = tile_v[pp * kPad + ci];
      if (WithIndex) argmax[o] = tile_i[pp * kPad + ci];
    }
    __syncthreads();
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kLanes * kWarps) roi_pool_backward_kernel(
    const T* __restrict__ grad,
    int64_t gn,
    int64_t gc,
    int64_t gh,
    int64_t gw,
    const int32_t* __restrict__ argmax,
    const T* __restrict__ rois,
    int batch_size,
    int channels,
    int height,
    int width,
    int pooled_height,
    int pooled_width,
    Acc* __restrict__ acc) {
  __shared__ __align__(16) unsigned char tile_g_raw[kTile * kPad * sizeof(Acc)];
  __shared__ int32_t tile_i[kTile * kPad];
  Acc* tile_g = reinterpret_cast<Acc*>(tile_g_raw);

  const int64_t k = blockIdx.x;
  const int c0 = blockIdx.y * kLanes;
  const int lane = threadIdx.x;
  const int warp = threadIdx.y;
  const int nc = min(kLanes, channels - c0);
  const int P = pooled_height * pooled_width;
  const int plane = height * width;

  const int b = static_cast<int>(rois[k * 5]);
  if (b < 0 || b >= batch_size) {
    return;  // the whole block leaves: no barrier is skipped by some threads only
  }
  Acc* acc_image = acc + static_cast<int64_t>(b) * plane * channels + c0 + lane;

  for (int p0 = 0; p0 < P; p0 += kTile) {
    const int np = min(kTile, P - p0);
    for (int t = warp * kLanes + lane; t < nc * np; t += kLanes * kWarps) {
      const int ci = t / np;
      const int pp = t - ci * np;
      const int p = p0 + pp;
      const int i = p / pooled_width;
      const int j = p - i * pooled_width;
      tile_g[pp * kPad + ci] = static_cast<Acc>(grad[k * gn + (c0 + ci) * gc + i * gh + j * gw]);
      tile_i[pp * kPad + ci] = argmax[(k * channels + c0 + ci) * P + p];
    }
    __syncthreads();
    if (lane < nc) {
      for (int pp = warp; pp < np; pp += kWarps) {
        const int32_t where = tile_i[pp * kPad + lane];
        if (where >= 0 && where < plane) {
          gpuAtomicAdd(acc_image + static_cast<int64_t>(where) * channels, tile_g[pp * kPad + lane]);
        }
      }
    }
    __syncthreads();
  }
}

dim3 grid_for(int64_t num_rois, int64_t channels) {
  return dim3(static_cast<unsigned int>(num_rois), static_cast<unsigned int>((channels + kLanes - 1) / kLanes));
}

template <typename T>
cudaError_t forward_typed(
    const void* input, int64_t sn, int64_t sh, int64_t sw, const void* rois, double spatial_scale,
    int64_t num_rois, int64_t batch_size, int64_t channels, int64_t height, int64_t width,
    int64_t pooled_height, int64_t pooled_width, void* out, int32_t* argmax, cudaStream_t stream) {
  const dim3 grid = grid_for(num_rois, channels), block(kLanes, kWarps);
  if (argmax != nullptr) {
    roi_pool_forward_kernel<T, true><<<grid, block, 0, stream>>>(
        static_cast<const T*>(input), sn, sh, sw, static_cast<const T*>(rois), static_cast<T>(spatial_scale),
        static_cast<int>(batch_size), static_cast<int>(channels), static_cast<int>(height),
        static_cast<int>(width), static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        static_cast<T*>(out), argmax);
  } else {
    roi_pool_forward_kernel<T, false><<<grid, block, 0, stream>>>(
        static_cast<const T*>(input), sn, sh, sw, static_cast<const T*>(rois), static_cast<T>(spatial_scale),
        static_cast<int>(batch_size), static_cast<int>(channels), static_cast<int>(height),
        static_cast<int>(width), static_cast<int>(pooled_height), static_cast<int>(pooled_width),
        static_cast<T*>(out), nullptr);
  }
  return cudaGetLastError();
}

template <typename T, typename Acc>
cudaError_t backward_typed(
    const void* grad, int64_t gn, int64_t gc, int64_t gh, int64_t gw, const int32_t* argmax, const void* rois,
    int64_t num_rois, int64_t batch_size, int64_t channels, int64_t height, int64_t width,
    int64_t pooled_height, int64_t pooled_width, void* grad_acc, cudaStream_t stream) {
  roi_pool_backward_kernel<T, Acc><<<grid_for(num_rois, channels), dim3(kLanes, kWarps), 0, stream>>>(
      static_cast<const T*>(grad), gn, gc, gh, gw, argmax, static_cast<const T*>(rois),
      static_cast<int>(batch_size), static_cast<int>(channels), static_cast<int>(height),
      static_cast<int>(width), static_cast<int>(pooled_height), static_cast<int>(pooled_width),
      static_cast<Acc*>(grad_acc));
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_roi_pool_forward(
    DType dtype, const void* input, int64_t sn, int64_t sh, int64_t sw, const void* rois, double spatial_scale,
    int64_t num_rois, int64_t batch_size, int64_t channels, int64_t height, int64_t width,
    int64_t pooled_height, int64_t pooled_width, void* out, int32_t* argmax, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return forward_typed<float>(input, sn, sh, sw, rois, spatial_scale, num_rois, batch_size, channels,
                                  height, width, pooled_height, pooled_width, out, argmax, stream);
    case DType::Double:
      return forward_typed<double>(input, sn, sh, sw, rois, spatial_scale, num_rois, batch_size, channels,
                                   height, width, pooled_height, pooled_width, out, argmax, stream);
    case DType::Half:
      return forward_typed<c10::Half>(input, sn, sh, sw, rois, spatial_scale, num_rois, batch_size, channels,
                                      height, width, pooled_height, pooled_width, out, argmax, stream);
    case DType::BFloat16:
      return forward_typed<c10::BFloat16>(input, sn, sh, sw, rois, spatial_scale, num_rois, batch_size,
                                          channels, height, width, pooled_height, pooled_width, out, argmax,
                                          stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_roi_pool_backward(
    DType dtype, const void* grad, int64_t gn, int64_t gc, int64_t gh, int64_t gw, const int32_t* argmax,
    const void* rois, int64_t num_rois, int64_t batch_size, int64_t channels, int64_t height, int64_t width,
    int64_t pooled_height, int64_t pooled_width, void* grad_acc, cudaStream_t stream) {
  switch (dtype) {
    case DType::Float:
      return backward_typed<float, float>(grad, gn, gc, gh, gw, argmax, rois, num_rois, batch_size, channels,
                                          height, width, pooled_height, pooled_width, grad_acc, stream);
    case DType::Double:
      return backward_typed<double, double>(grad, gn, gc, gh, gw, argmax, rois, num_rois, batch_size,
                                            channels, height, width, pooled_height, pooled_width, grad_acc,
                                            stream);
    case DType::Half:
      return backward_typed<c10::Half, float>(grad, gn, gc, gh, gw, argmax, rois, num_rois, batch_size,
                                              channels, height, width, pooled_height, pooled_width, grad_acc,
                                              stream);
    case DType::BFloat16:
      return backward_typed<c10::BFloat16, float>(grad, gn, gc, gh, gw, argmax, rois, num_rois, batch_size,
                                                  channels, height, width, pooled_height, pooled_width,
                                                  grad_acc, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace fastrcnn
