// The geometry of RoI max pooling, shared by the CPU and the CUDA kernels.
//
// Fast R-CNN (Girshick 2015), section 2.1; the arithmetic is Caffe's and torchvision's, step by step, so that
// the bins (and therefore outputs and argmaxes) are bit-identical to theirs:
//
//   start_w = round(x1 * s)   end_w = round(x2 * s)        (C round: half away from zero; x * s in the input dtype T)
//   roi_w   = max(end_w - start_w + 1, 1)                   (the +1 of the inclusive box convention, see boxes.py)
//   bin_w   = T(roi_w) / T(pw)                              (in T: float, double, or half / bfloat16 arithmetic)
//   bin j   = [floor(T(j) * bin_w), ceil(T(j + 1) * bin_w)) + start_w, clipped to [0, W]
//
// and likewise for rows. A bin may be empty (then output 0, argmax -1); neighbouring bins may overlap.
// A value takes part in the max only if it is greater than T(-FLT_MAX) (NaN never, -inf never; in half and
// bfloat16 T(-FLT_MAX) is -inf), and the first maximum in (h, w) scan order wins.
//
// This header is included by nvcc: keep it free of ATen.
#pragma once

#include <cfloat>
#include <cmath>

#if defined(__CUDACC__)
#define FASTRCNN_HD __host__ __device__ __forceinline__
#else
#define FASTRCNN_HD inline
#endif

namespace fastrcnn {
namespace roi_pool_detail {

// The type the rounding functions work in: the dtype itself, or float for half and bfloat16.
template <typename T>
struct Arith {
  using type = float;
};
template <>
struct Arith<double> {
  using type = double;
};

FASTRCNN_HD float c_round(float v) { return ::roundf(v); }
FASTRCNN_HD double c_round(double v) { return ::round(v); }
FASTRCNN_HD float c_floor(float v) { return ::floorf(v); }
FASTRCNN_HD double c_floor(double v) { return ::floor(v); }
FASTRCNN_HD float c_ceil(float v) { return ::ceilf(v); }
FASTRCNN_HD double c_ceil(double v) { return ::ceil(v); }

FASTRCNN_HD int imin(int a, int b) { return a < b ? a : b; }
FASTRCNN_HD int imax(int a, int b) { return a > b ? a : b; }

// The initial running maximum of a non-empty bin: only values above it can win.
template <typename T>
FASTRCNN_HD T lowest() {
  return static_cast<T>(-FLT_MAX);
}

// round(v * scale) as an int, in Caffe's arithmetic (the product in T).
template <typename T>
FASTRCNN_HD int scaled_round(T v, T scale) {
  using A = typename Arith<T>::type;
  return static_cast<int>(c_round(static_cast<A>(static_cast<T>(v * scale))));
}

// Where one RoI starts on the feature map and how large its bins are.
template <typename T>
struct RoIGeometry {
  int start_h;
  int start_w;
  T bin_h;
  T bin_w;
};

// roi points at (batch_index, x1, y1, x2, y2).
template <typename T>
FASTRCNN_HD RoIGeometry<T> roi_geometry(const T* roi, T scale, int pooled_height, int pooled_width) {
  RoIGeometry<T> g;
  g.start_w = scaled_round(roi[1], scale);
  g.start_h = scaled_round(roi[2], scale);
  const int end_w = scaled_round(roi[3], scale);
  const int end_h = scaled_round(roi[4], scale);
  const int roi_w = imax(end_w - g.start_w + 1, 1);  // malformed RoIs are forced to 1 x 1
  const int roi_h = imax(end_h - g.start_h + 1, 1);
  g.bin_h = static_cast<T>(roi_h) / static_cast<T>(pooled_height);
  g.bin_w = static_cast<T>(roi_w) / static_cast<T>(pooled_width);
  return g;
}

// The half-open range [lo, hi) that bin i covers along one axis, clipped to [0, limit].
template <typename T>
FASTRCNN_HD void bin_range(int i, T bin_size, int start, int limit, int& lo, int& hi) {
  using A = typename Arith<T>::type;
  lo = static_cast<int>(c_floor(static_cast<A>(static_cast<T>(static_cast<T>(i) * bin_size))));
  hi = static_cast<int>(c_ceil(static_cast<A>(static_cast<T>(static_cast<T>(i + 1) * bin_size))));
  lo = imin(imax(lo + start, 0), limit);
  hi = imin(imax(hi + start, 0), limit);
}

}  // namespace roi_pool_detail
}  // namespace fastrcnn
