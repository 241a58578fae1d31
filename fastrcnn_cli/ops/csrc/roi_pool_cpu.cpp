// RoI max pooling on the CPU: forward (output, argmax) and backward.
//
// Forward. The input is copied once into a blocked channels-last layout, [C / 64][N][H][W][64]: for a given
// (h, w) a block of 64 channels is contiguous, and one block of one image (600 KB in float for VGG16 conv5) is
// contiguous too, so it stays in the L2 cache while every RoI is pooled from it. Work units are (channel block,
// RoI), channel-block-major, handed to the threads one at a time from a shared counter (RoIs differ in size).
// For each bin, the window max is computed for 32 floats (16 doubles) at once with SIMD compare/select, values
// and argmaxes side by side in 4 + 4 AVX2 registers: a few vector instructions per window cell. The results of a
// unit ([bins][64 channels]) are transposed in registers (8 x 8 blocks) into the output's [channels][bins] order
// and written as one contiguous run, with non-temporal stores when the output is large. The vector code is
// compiled for AVX2 and for the x86-64 baseline (GCC vector extensions) and chosen at run time; half and
// bfloat16 take a scalar path. Large outputs come from a small cache of freed blocks (see BlockCache).
// Inference (roi_pool_inference, when no gradient is wanted) runs the same code compiled without the argmax:
// the same compare/select on the values (so the same bits), half the registers and half the output traffic.
//
// Backward. grad_input[b, c, argmax] += grad[k, c, bin], summed over RoIs and bins. Bins overlap, so several
// (k, bin) can add to the same cell. Each work unit owns a slice (image, block of 64 channels) of grad_input and
// walks the RoIs of that image in increasing k and the bins in increasing order: no two threads write the same
// cell, and every cell receives its additions in the same order as torchvision's serial loop, whatever the
// number of threads (deterministic, bit-identical to torchvision's CPU backward).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>  // SSE2 non-temporal stores (baseline on x86-64)
#endif

#include "roi_pool_checks.h"
#include "roi_pool_geometry.h"

#if defined(__GNUC__) && !defined(__clang__) && (defined(__x86_64__) || defined(__i386__))
#define FASTRCNN_X86_DISPATCH 1
#define FASTRCNN_ALWAYS_INLINE __attribute__((always_inline)) inline
#elif defined(__GNUC__)
#define FASTRCNN_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define FASTRCNN_ALWAYS_INLINE inline
#endif

namespace fastrcnn {
namespace {

using namespace roi_pool_detail;

// Run f(u) for u in [0, units), units handed out one at a time to the intra-op threads (load balancing for
// RoIs of very different sizes). Results do not depend on the schedule: every unit writes its own outputs.
template <typename F>
void parallel_units(int64_t units, const F& f) {
  if (units <= 0) {
    return;
  }
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), units);
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t u = next.fetch_add(1); u < units; u = next.fetch_add(1)) {
      f(u);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Output memory

// The outputs of a large call are hundreds of MB (2000 RoIs x 512 channels x 7 x 7: 200 MB of values and 200 MB
// of argmax). glibc gives every allocation that large fresh pages from the OS and returns them on free, so each
// call pays a page fault and a page clearing for every 4 KB it writes: on a 2-core VM that is more time than the
// pooling itself. Blocks of freed outputs of at least kCacheMinBytes are therefore kept (up to
// FASTRCNN_ROI_POOL_CACHE_MB, default 1024; 0 turns this off) and handed to the next call that needs a block
// of about the same size, like the CUDA caching allocator does for GPU memory. Sizes are rounded up to 2 MB.
constexpr size_t kCacheMinBytes = size_t(16) << 20;
constexpr size_t kCacheGranule = size_t(2) << 20;

class BlockCache {
 public:
  static BlockCache& instance() {
    static BlockCache* cache = new BlockCache();  // never destroyed: tensors may outlive static destruction
    return *cache;
  }

  size_t limit() const { return limit_; }

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> guard(mutex_);
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {  // the smallest block that fits, wasting at most a quarter
      const size_t size = free_[i].first;
      if (size >= bytes && size <= bytes + bytes / 4 && (best == free_.size() || size < free_[best].first)) {
        best = i;
      }
    }
    if (best == free_.size()) {
      return nullptr;
    }
    void* block = free_[best].second;
    free_bytes_ -= free_[best].first;
    free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    return block;
  }

  void give(void* block, size_t bytes) {
    std::vector<void*> release;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      while (!free_.empty() && free_bytes_ + bytes > limit_) {  // oldest first
        release.push_back(free_.front().second);
        free_bytes_ -= free_.front().first;
        free_.erase(free_.begin());
      }
      if (free_bytes_ + bytes <= limit_) {
        free_.emplace_back(bytes, block);
        free_bytes_ += bytes;
      } else {
        release.push_back(block);
      }
    }
    for (void* b : release) {
      std::free(b);
    }
  }

 private:
  BlockCache() {
    const char* env = std::getenv("FASTRCNN_ROI_POOL_CACHE_MB");
    const long long mb = env != nullptr ? std::atoll(env) : 1024;
    limit_ = mb > 0 ? static_cast<size_t>(mb) << 20 : 0;
  }

  std::mutex mutex_;
  std::vector<std::pair<size_t, void*>> free_;
  size_t free_bytes_ = 0;
  size_t limit_ = 0;
};

// at::empty, with the memory of large tensors from (and back to) the BlockCache.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t numel = 1;
  for (const int64_t s : sizes) {
    numel *= s;
  }
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  BlockCache& cache = BlockCache::instance();
  if (bytes < kCacheMinBytes || cache.limit() == 0) {
    return at::empty(sizes, options);
  }
  const size_t rounded = (bytes + kCacheGranule - 1) / kCacheGranule * kCacheGranule;
  void* block = cache.take(rounded);
  if (block == nullptr) {
    block = std::aligned_alloc(64, rounded);
    TORCH_CHECK(block != nullptr, message("roi_pool: out of memory allocating ", rounded, " bytes"));
  }
  return at::from_blob(block, sizes, [rounded](void* p) { BlockCache::instance().give(p, rounded); }, options);
}

// ---------------------------------------------------------------------------------------------------------
// Forward

// Channels per chunk: the input is copied once into a "blocked" layout [chunks][N][H][W][kChunk] (channels
// padded with zeros to a multiple of kChunk), so that one chunk of one image (H * W * 64 values, 600 KB in
// float for VGG16 conv5) is contiguous and stays in the L2 cache while all RoIs are pooled from it.
constexpr int64_t kChunk = 64;

template <typename T>
struct ForwardArgs {
  const T* x;  // blocked input: (chunk, n, h, w, c % kChunk) at chunk * s_chunk + n * s_image + (h * W + w) * kChunk
  int64_t s_chunk, s_image;
  const T* rois;  // contiguous [K, 5]
  T scale;
  int64_t num_rois, channels, height, width, pooled_height, pooled_width;
  int64_t chunks;
  bool stream;  // write the output with non-temporal stores (large outputs that will not fit in cache anyway)
  T* out;       // [K, C, ph, pw]
  int32_t* argmax;
};

// SIMD block: 4 vectors of VB bytes (GCC vector extensions): VB = 32 for the AVX2 build (ymm registers), 16 for
// the baseline build (xmm registers: SSE2 on x86-64, NEON on ARM). The argmax lanes are integers of the same
// width as T, so that a compare mask selects both.
template <typename T, int VB>
struct Simd {
  using Index = std::conditional_t<sizeof(T) == 8, int64_t, int32_t>;
  typedef T Vec __attribute__((vector_size(VB)));
  typedef Index IVec __attribute__((vector_size(VB)));
  static constexpr int kLanes = VB / sizeof(T);
  static constexpr int kVecs = 4;
  static constexpr int kBlock = kLanes * kVecs;  // channels per block: 32 floats or 16 doubles with AVX2
  static_assert(kChunk % kBlock == 0, "a chunk is a whole number of blocks");
};

// Max and first argmax over the window [hs, he) x [ws, we) for the kBlock channels at xc (a pointer into the
// blocked input: cell (h, w) at xc + (h * W + w) * kChunk); results to tile_v[0 .. kBlock), tile_i likewise.
// WithIndex = false (inference: no gradient wanted) keeps the max only, with the same comparisons, so the pooled
// values are bit-identical; tile_i is then not touched.
template <typename T, int VB, bool WithIndex>
FASTRCNN_ALWAYS_INLINE void window_max_block(
    const T* xc, int64_t width, int hs, int he, int ws, int we, T* tile_v, int32_t* tile_i) {
  using S = Simd<T, VB>;
  using Vec = typename S::Vec;
  using IVec = typename S::IVec;
  using Index = typename S::Index;
  constexpr int L = S::kLanes;
  Vec m[S::kVecs];
  IVec idx[S::kVecs];
  for (int j = 0; j < S::kVecs; ++j) {
    m[j] = Vec{} + lowest<T>();
    if constexpr (WithIndex) idx[j] = IVec{} - 1;
  }
  for (int h = hs; h < he; ++h) {
    for (int w = ws; w < we; ++w) {
      const Index here = static_cast<Index>(h * width + w);
      const T* cell = xc + static_cast<int64_t>(here) * kChunk;
      const IVec here_v = IVec{} + here;
      for (int j = 0; j < S::kVecs; ++j) {
        Vec v;
        std::memcpy(&v, cell + j * L, sizeof(Vec));
        const auto greater = v > m[j];  // false for NaN: NaN never wins; ties keep the first
        m[j] = greater ? v : m[j];
        if constexpr (WithIndex) idx[j] = greater ? here_v : idx[j];
      }
    }
  }
  for (int j = 0; j < S::kVecs; ++j) {
    std::memcpy(tile_v + j * L, &m[j], sizeof(Vec));
    if constexpr (!WithIndex) {
      continue;
    } else if constexpr (sizeof(Index) == 4) {
      std::memcpy(tile_i + j * L, &idx[j], sizeof(IVec));
    } else {
      typedef int32_t Narrow __attribute__((vector_size(sizeof(IVec) / 2)));
      const Narrow narrow = __builtin_convertvector(idx[j], Narrow);
      std::memcpy(tile_i + j * L, &narrow, sizeof(Narrow));
    }
  }
}

// The same one channel at a time, for nc channels (half and bfloat16).
template <typename T, bool WithIndex>
FASTRCNN_ALWAYS_INLINE void window_max_scalar(
    const T* xc, int64_t width, int64_t nc, int hs, int he, int ws, int we, T* tile_v, int32_t* tile_i) {
  for (int64_t c = 0; c < nc; ++c) {
    tile_v[c] = lowest<T>();
    if constexpr (WithIndex) tile_i[c] = -1;
  }
  for (int h = hs; h < he; ++h) {
    for (int w = ws; w < we; ++w) {
      const int32_t here = static_cast<int32_t>(h * width + w);
      const T* cell = xc + static_cast<int64_t>(here) * kChunk;
      for (int64_t c = 0; c < nc; ++c) {
        const T v = cell[c];
        if (v > tile_v[c]) {
          tile_v[c] = v;
          if constexpr (WithIndex) tile_i[c] = here;
        }
      }
    }
  }
}

template <typename T>
constexpr bool has_simd() {
  return std::is_same<T, float>::value || std::is_same<T, double>::value;
}

// In-register transposes (GCC vector shuffles; AVX2 unpack / shuffle / permute when compiled for AVX2).
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef double D4 __attribute__((vector_size(32)));
typedef int64_t L4 __attribute__((vector_size(32)));

// Two-vector shuffles with constant indices: __builtin_shufflevector (clang, GCC >= 12) or __builtin_shuffle.
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
#define FASTRCNN_SHUFFLE8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
  __builtin_shufflevector(a, b, i0, i1, i2, i3, i4, i5, i6, i7)
#define FASTRCNN_SHUFFLE4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define FASTRCNN_SHUFFLE8(a, b, i0, i1, i2, i3, i4, i5, i6, i7) \
  __builtin_shuffle(a, b, I8{i0, i1, i2, i3, i4, i5, i6, i7})
#define FASTRCNN_SHUFFLE4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, L4{i0, i1, i2, i3})
#endif

// 8 x 8 block of 32-bit values (V: F8 or I8): rows become columns (AVX2: unpack, shuffle, permute2f128).
template <typename V>
FASTRCNN_ALWAYS_INLINE void transpose8x8(V r[8]) {
  V t[8], u[8];
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = FASTRCNN_SHUFFLE8(r[2 * i], r[2 * i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[2 * i + 1] = FASTRCNN_SHUFFLE8(r[2 * i], r[2 * i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 2; ++i) {
    u[4 * i + 0] = FASTRCNN_SHUFFLE8(t[4 * i + 0], t[4 * i + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    u[4 * i + 1] = FASTRCNN_SHUFFLE8(t[4 * i + 0], t[4 * i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    u[4 * i + 2] = FASTRCNN_SHUFFLE8(t[4 * i + 1], t[4 * i + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    u[4 * i + 3] = FASTRCNN_SHUFFLE8(t[4 * i + 1], t[4 * i + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = FASTRCNN_SHUFFLE8(u[i], u[i + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[i + 4] = FASTRCNN_SHUFFLE8(u[i], u[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

// 4 x 4 block of doubles.
FASTRCNN_ALWAYS_INLINE void transpose4x4(D4 r[4]) {
  const D4 t0 = FASTRCNN_SHUFFLE4(r[0], r[1], 0, 4, 2, 6), t1 = FASTRCNN_SHUFFLE4(r[0], r[1], 1, 5, 3, 7);
  const D4 t2 = FASTRCNN_SHUFFLE4(r[2], r[3], 0, 4, 2, 6), t3 = FASTRCNN_SHUFFLE4(r[2], r[3], 1, 5, 3, 7);
  r[0] = FASTRCNN_SHUFFLE4(t0, t2, 0, 1, 4, 5);
  r[1] = FASTRCNN_SHUFFLE4(t1, t3, 0, 1, 4, 5);
  r[2] = FASTRCNN_SHUFFLE4(t0, t2, 2, 3, 6, 7);
  r[3] = FASTRCNN_SHUFFLE4(t1, t3, 2, 3, 6, 7);
}

// src[p * kChunk + c] (bins x channels) to dst[c * P + p] (channels x bins) for c < nc, by B x B blocks.
template <typename V, int B, typename E>
FASTRCNN_ALWAYS_INLINE void transpose_tile(const E* src, int64_t P, int64_t nc, E* dst) {
  static_assert(sizeof(V) == B * sizeof(E), "one vector per block row");
  int64_t c = 0;
  for (; c + B <= nc; c += B) {
    int64_t p = 0;
    for (; p + B <= P; p += B) {
      V r[B];
      for (int i = 0; i < B; ++i) {
        std::memcpy(&r[i], src + (p + i) * kChunk + c, sizeof(V));
      }
      if constexpr (B == 8) {
        transpose8x8<V>(r);
      } else {
        transpose4x4(r);
      }
      for (int i = 0; i < B; ++i) {
        std::memcpy(dst + (c + i) * P + p, &r[i], sizeof(V));
      }
    }
    for (; p < P; ++p) {
      for (int i = 0; i < B; ++i) {
        dst[(c + i) * P + p] = src[p * kChunk + c + i];
      }
    }
  }
  for (; c < nc; ++c) {
    for (int64_t p = 0; p < P; ++p) {
      dst[c * P + p] = src[p * kChunk + c];
    }
  }
}

template <typename T, int VB>
FASTRCNN_ALWAYS_INLINE void transpose_values(const T* src, int64_t P, int64_t nc, T* dst) {
  if constexpr (VB == 32 && std::is_same<T, float>::value) {
    transpose_tile<F8, 8>(src, P, nc, dst);
  } else if constexpr (VB == 32 && std::is_same<T, double>::value) {
    transpose_tile<D4, 4>(src, P, nc, dst);
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      for (int64_t p = 0; p < P; ++p) {
        dst[c * P + p] = src[p * kChunk + c];
      }
    }
  }
}

template <int VB>
FASTRCNN_ALWAYS_INLINE void transpose_indices(const int32_t* src, int64_t P, int64_t nc, int32_t* dst) {
  if constexpr (VB == 32) {
    transpose_tile<I8, 8>(src, P, nc, dst);
  } else {
    for (int64_t c = 0; c < nc; ++c) {
      for (int64_t p = 0; p < P; ++p) {
        dst[c * P + p] = src[p * kChunk + c];
      }
    }
  }
}

// memcpy, with non-temporal stores if `stream`: the output of a large call (hundreds of MB) is written once and
// read much later, so bypassing the caches saves the read-for-ownership of every line and keeps the input cached.
inline void copy_out(void* dst, const void* src, size_t bytes, bool stream) {
#if defined(__x86_64__) || defined(_M_X64)
  if (stream) {
    char* d = static_cast<char*>(dst);
    const char* s = static_cast<const char*>(src);
    size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;
    head = std::min(head, bytes);
    std::memcpy(d, s, head);
    d += head;
    s += head;
    bytes -= head;
    for (; bytes >= 16; bytes -= 16, d += 16, s += 16) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), _mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
    }
    std::memcpy(d, s, bytes);
    _mm_sfence();
    return;
  }
#endif
  std::memcpy(dst, src, bytes);
}

// One work unit: RoI k, channel chunk `chunk`. Units run chunk-major, so the threads share one chunk of input.
// VB: the SIMD vector width in bytes this copy is compiled for. WithIndex: also the argmax (a.argmax).
template <typename T, int VB, bool WithIndex>
FASTRCNN_ALWAYS_INLINE void forward_unit(const ForwardArgs<T>& a, int64_t unit) {
  const int64_t chunk = unit / a.num_rois;
  const int64_t k = unit % a.num_rois;
  const int64_t c_begin = chunk * kChunk;
  const int64_t nc = std::min(a.channels, c_begin + kChunk) - c_begin;
  const int PH = static_cast<int>(a.pooled_height), PW = static_cast<int>(a.pooled_width);
  const int64_t P = a.pooled_height * a.pooled_width;
  const int H = static_cast<int>(a.height), W = static_cast<int>(a.width);

  const T* roi = a.rois + k * 5;
  const int64_t b = static_cast<int64_t>(static_cast<int>(roi[0]));  // truncation, as Caffe; checked before
  const RoIGeometry<T> g = roi_geometry<T>(roi, a.scale, PH, PW);

  // per-thread buffers, reused from unit to unit
  static thread_local std::vector<int> hs, he, ws, we;
  static thread_local std::vector<T> tile_v, staged_v;  // tile: [P][kChunk]; staged: [nc][P]
  static thread_local std::vector<int32_t> tile_i, staged_i;
  hs.resize(PH);
  he.resize(PH);
  ws.resize(PW);
  we.resize(PW);
  if (static_cast<int64_t>(tile_v.size()) < P * kChunk) {
    tile_v.resize(P * kChunk);
    tile_i.resize(P * kChunk);
    staged_v.resize(P * kChunk);
    staged_i.resize(P * kChunk);
  }
  for (int i = 0; i < PH; ++i) {
    bin_range<T>(i, g.bin_h, g.start_h, H, hs[i], he[i]);
  }
  for (int j = 0; j < PW; ++j) {
    bin_range<T>(j, g.bin_w, g.start_w, W, ws[j], we[j]);
  }

  const T* x_image = a.x + chunk * a.s_chunk + b * a.s_image;
  for (int i = 0; i < PH; ++i) {
    for (int j = 0; j < PW; ++j) {
      const int64_t p = static_cast<int64_t>(i) * PW + j;
      T* tv = tile_v.data() + p * kChunk;
      int32_t* ti = tile_i.data() + p * kChunk;
      if (he[i] <= hs[i] || we[j] <= ws[j]) {  // an empty bin pools nothing: 0, and no gradient
        std::fill(tv, tv + kChunk, static_cast<T>(0));
        if constexpr (WithIndex) std::fill(ti, ti + kChunk, -1);
        continue;
      }
      if constexpr (has_simd<T>()) {
        // whole blocks, padding channels included (zeros, never written out)
        constexpr int64_t B = Simd<T, VB>::kBlock;
        for (int64_t c = 0; c < nc; c += B) {
          window_max_block<T, VB, WithIndex>(x_image + c, a.width, hs[i], he[i], ws[j], we[j], tv + c, ti + c);
        }
      } else {
        window_max_scalar<T, WithIndex>(x_image, a.width, nc, hs[i], he[i], ws[j], we[j], tv, ti);
      }
    }
  }
  // [P][channels] -> [channels][P], then out to the contiguous block out[k, c_begin : c_begin + nc, :, :]
  transpose_values<T, VB>(tile_v.data(), P, nc, staged_v.data());
  const int64_t o = (k * a.channels + c_begin) * P;
  copy_out(a.out + o, staged_v.data(), nc * P * sizeof(T), a.stream);
  if constexpr (WithIndex) {
    transpose_indices<VB>(tile_i.data(), P, nc, staged_i.data());
    copy_out(a.argmax + o, staged_i.data(), nc * P * sizeof(int32_t), a.stream);
  }
}

template <typename T, bool WithIndex>
void forward_unit_baseline(const ForwardArgs<T>& a, int64_t unit) {
  forward_unit<T, 16, WithIndex>(a, unit);
}

#ifdef FASTRCNN_X86_DISPATCH
template <typename T, bool WithIndex>
__attribute__((target("avx2,fma"))) void forward_unit_avx2(const ForwardArgs<T>& a, int64_t unit) {
  forward_unit<T, 32, WithIndex>(a, unit);
}
#endif

template <typename T>
using ForwardUnitFn = void (*)(const ForwardArgs<T>&, int64_t);

// AVX2 where the CPU has it, unless FASTRCNN_ROI_POOL_SIMD=baseline (a way to test the baseline build).
template <typename T, bool WithIndex>
ForwardUnitFn<T> pick_forward_unit() {
#ifdef FASTRCNN_X86_DISPATCH
  const char* choice = std::getenv("FASTRCNN_ROI_POOL_SIMD");
  const bool baseline = choice != nullptr && std::strcmp(choice, "baseline") == 0;
  if (has_simd<T>() && !baseline && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return &forward_unit_avx2<T, WithIndex>;
  }
#endif
  return &forward_unit_baseline<T, WithIndex>;
}

// The input in the blocked layout [chunks][N][H][W][kChunk], padding channels zero.
at::Tensor blocked_input(const at::Tensor& input, int64_t chunks) {
  const int64_t N = input.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  at::Tensor xb = at::empty({chunks, N, H, W, kChunk}, input.options());
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    const int64_t c0 = chunk * kChunk;
    const int64_t nc = std::min(C, c0 + kChunk) - c0;
    at::Tensor dst = xb.select(0, chunk).permute({0, 3, 1, 2});  // [N, kChunk, H, W] view
    dst.narrow(1, 0, nc).copy_(input.narrow(1, c0, nc));
    if (nc < kChunk) {
      dst.narrow(1, nc, kChunk - nc).zero_();
    }
  }
  return xb;
}

// Outputs at least this large are written with non-temporal stores.
constexpr int64_t kStreamBytes = 16 << 20;

// The forward of both operators: argmax is filled when defined (roi_pool), skipped when not (roi_pool_inference:
// no gradient wanted, so neither the index bookkeeping nor the int32 output of the output's size is paid for).
void roi_pool_forward_into(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, at::Tensor& output,
                           at::Tensor* argmax) {
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  const at::Tensor rois_c = rois.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fastrcnn::roi_pool (CPU)", [&] {
    const scalar_t scale = static_cast<scalar_t>(spatial_scale);
    check_rois_cpu<scalar_t>(rois_c.const_data_ptr<scalar_t>(), num_rois, input.size(0), scale);
    ForwardArgs<scalar_t> a;
    a.chunks = (channels + kChunk - 1) / kChunk;
    const at::Tensor xb = blocked_input(input, a.chunks);
    a.x = xb.const_data_ptr<scalar_t>();
    a.s_chunk = xb.stride(0);
    a.s_image = xb.stride(1);
    a.rois = rois_c.const_data_ptr<scalar_t>();
    a.scale = scale;
    a.num_rois = num_rois;
    a.channels = channels;
    a.height = input.size(2);
    a.width = input.size(3);
    a.pooled_height = output.size(2);
    a.pooled_width = output.size(3);
    const int64_t bytes_per_value = static_cast<int64_t>(sizeof(scalar_t) + (argmax ? sizeof(int32_t) : 0));
    a.stream = output.numel() * bytes_per_value >= kStreamBytes;
    a.out = output.mutable_data_ptr<scalar_t>();
    a.argmax = argmax ? argmax->mutable_data_ptr<int32_t>() : nullptr;
    const ForwardUnitFn<scalar_t> unit =
        argmax ? pick_forward_unit<scalar_t, true>() : pick_forward_unit<scalar_t, false>();
    parallel_units(a.chunks * num_rois, [&](int64_t u) { unit(a, u); });
  });
}

std::tuple<at::Tensor, at::Tensor> roi_pool_forward_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width) {
  check_forward_args(input, rois, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(input.is_cpu(), message("roi_pool: the CPU kernel got a tensor on ", input.device()));
  const int64_t num_rois = rois.size(0);
  const int64_t channels = input.size(1);
  at::Tensor output = empty_output({num_rois, channels, pooled_height, pooled_width}, input.options());
  at::Tensor argmax = empty_output({num_rois, channels, pooled_height, pooled_width}, input.options().dtype(at::kInt));
  if (output.numel() > 0) {
    roi_pool_forward_into(input, rois, spatial_scale, output, &argmax);
  }
  return std::make_tuple(output, argmax);
}

at::Tensor roi_pool_inference_cpu(
    const at::Tensor& input,
    const at::Tensor& rois,
    double spatial_scale,
    int64_t pooled_height,
    int64_t pooled_width) {
  check_forward_args(input, rois, spatial_scale, pooled_height, pooled_width);
  TORCH_CHECK_VALUE(input.is_cpu(), message("roi_pool: the CPU kernel got a tensor on ", input.device()));
  at::Tensor output = empty_output({rois.size(0), input.size(1), pooled_height, pooled_width}, input.options());
  if (output.numel() > 0) {
    roi_pool_forward_into(input, rois, spatial_scale, output, nullptr);
  }
  return output;
}

// ---------------------------------------------------------------------------------------------------------
// Backward

constexpr int64_t kBackwardChunk = 64;  // channels per work unit (the unit's grad_input slice stays in L2)
constexpr size_t kPrefetchRois = 2;      // how far ahead the gradient and argmax rows of the next RoIs are fetched

template <typename T>
struct BackwardArgs {
  const T* grad;
  int64_t gn, gc, gh, gw;  // grad strides
  bool contiguous;         // grad is a contiguous [K, C, ph, pw]
  const int32_t* argmax;   // contiguous [K, C, ph, pw]
  int64_t channels, plane, pooled_height, pooled_width, chunks;
  const std::vector<std::vector<int64_t>>* rois_of;  // the RoIs of each image, in increasing k
  T* grad_input;                                     // zeros [N, C, H, W]
};

inline void prefetch_range(const void* begin, size_t bytes) {
  const char* p = static_cast<const char*>(begin);
  for (size_t o = 0; o < bytes; o += 64) {
    __builtin_prefetch(p + o, 0, 0);
  }
}

// One work unit: image n, channels [c_begin, c_end), every RoI of image n in increasing k.
// Returns false if an argmax pointed outside the plane (not an argmax of roi_pool).
template <typename T>
bool backward_unit(const BackwardArgs<T>& a, int64_t unit) {
  const int64_t n = unit / a.chunks;
  const int64_t c_begin = (unit % a.chunks) * kBackwardChunk;
  const int64_t nc = std::min(a.channels, c_begin + kBackwardChunk) - c_begin;
  const int64_t P = a.pooled_height * a.pooled_width;
  const uint32_t plane = static_cast<uint32_t>(a.plane);
  const std::vector<int64_t>& ks = (*a.rois_of)[n];
  bool ok = true;
  for (size_t r = 0; r < ks.size(); ++r) {
    if (r + kPrefetchRois < ks.size()) {  // the rows of a RoI are contiguous, but RoIs are C * P apart
      const int64_t ahead = ks[r + kPrefetchRois];
      prefetch_range(a.argmax + (ahead * a.channels + c_begin) * P, nc * P * sizeof(int32_t));
      if (a.contiguous) {
        prefetch_range(a.grad + (ahead * a.channels + c_begin) * P, nc * P * sizeof(T));
      }
    }
    const int64_t k = ks[r];
    for (int64_t c = c_begin; c < c_begin + nc; ++c) {
      T* __restrict__ gi = a.grad_input + (n * a.channels + c) * a.plane;
      const int32_t* __restrict__ am = a.argmax + (k * a.channels + c) * P;
      if (a.contiguous) {
        const T* __restrict__ go = a.grad + (k * a.channels + c) * P;
        for (int64_t p = 0; p < P; ++p) {
          const int32_t where = am[p];
          if (static_cast<uint32_t>(where) < plane) {
            gi[where] += go[p];
          } else {
            ok &= where == -1;
          }
        }
      } else {
        const T* go = a.grad + k * a.gn + c * a.gc;
        for (int64_t i = 0; i < a.pooled_height; ++i) {
          for (int64_t j = 0; j < a.pooled_width; ++j) {
            const int32_t where = am[i * a.pooled_width + j];
            if (static_cast<uint32_t>(where) < plane) {
              gi[where] += go[i * a.gh + j * a.gw];
            } else {
              ok &= where == -1;
            }
          }
        }
      }
    }
  }
  return ok;
}

template <typename T>
void backward_cpu_impl(
    const at::Tensor& grad,
    const T* rois,
    const int32_t* argmax,
    int64_t num_rois,
    int64_t batch_size,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t pooled_height,
    int64_t pooled_width,
    T* grad_input) {
  std::vector<std::vector<int64_t>> rois_of(batch_size);
  for (int64_t k = 0; k < num_rois; ++k) {
    rois_of[static_cast<int>(rois[k * 5])].push_back(k);
  }
  BackwardArgs<T> a;
  a.grad = grad.const_data_ptr<T>();
  a.gn = grad.stride(0);
  a.gc = grad.stride(1);
  a.gh = grad.stride(2);
  a.gw = grad.stride(3);
  a.contiguous = grad.is_contiguous();
  a.argmax = argmax;
  a.channels = channels;
  a.plane = height * width;
  a.pooled_height = pooled_height;
  a.pooled_width = pooled_width;
  a.chunks = (channels + kBackwardChunk - 1) / kBackwardChunk;
  a.rois_of = &rois_of;
  a.grad_input = grad_input;
  std::atomic<bool> bad_argmax{false};
  parallel_units(batch_size * a.chunks, [&](int64_t unit) {
    if (!backward_unit<T>(a, unit)) {
      bad_argmax.store(true);
    }
  });
  TORCH_CHECK_VALUE(
      !bad_argmax.load(), message("roi_pool_backward: argmax holds positions outside the ", height, " x ", width,
      " input plane (not an argmax of roi_pool?)"));
}

at::Tensor roi_pool_backward_cpu(
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
  TORCH_CHECK_VALUE(grad.is_cpu(), message("roi_pool_backward: the CPU kernel got a tensor on ", grad.device()));
  if (grad.scalar_type() == at::kHalf || grad.scalar_type() == at::kBFloat16) {
    // add in float32 and round once, as the CUDA kernel does (half sums of overlapping RoIs drift by 1e-1)
    return roi_pool_backward_cpu(grad.to(at::kFloat), rois.to(at::kFloat), argmax, spatial_scale, pooled_height,
                                 pooled_width, batch_size, channels, height, width)
        .to(grad.scalar_type());
  }
  at::Tensor grad_input = at::zeros({batch_size, channels, height, width}, grad.options());
  if (grad.numel() == 0 || grad_input.numel() == 0) {
    return grad_input;
  }
  const at::Tensor rois_c = rois.contiguous();
  const at::Tensor argmax_c = argmax.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, grad.scalar_type(), "fastrcnn::roi_pool_backward (CPU)", [&] {
    const scalar_t* r = rois_c.const_data_ptr<scalar_t>();
    check_rois_cpu<scalar_t>(r, rois.size(0), batch_size, static_cast<scalar_t>(spatial_scale));
    backward_cpu_impl<scalar_t>(
        grad, r, argmax_c.const_data_ptr<int32_t>(), rois.size(0), batch_size, channels, height, width,
        pooled_height, pooled_width, grad_input.mutable_data_ptr<scalar_t>());
  });
  return grad_input;
}

}  // namespace
}  // namespace fastrcnn

TORCH_LIBRARY_IMPL(fastrcnn, CPU, m) {
  m.impl("roi_pool", &fastrcnn::roi_pool_forward_cpu);
  m.impl("roi_pool_inference", &fastrcnn::roi_pool_inference_cpu);
  m.impl("roi_pool_backward", &fastrcnn::roi_pool_backward_cpu);
}
