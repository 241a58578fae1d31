// Selective Search (Uijlings et al., IJCV 2013) with OpenCV's choices, written for speed: the native proposer.
//
// The algorithm and its parameters follow opencv_contrib's ximgproc (selectivesearchsegmentation.cpp,
// graphsegmentation.cpp); the data structures are ours. Per image, for every colour space c, graph-segmentation
// threshold k and merging strategy s (12 such groupings in fast mode, 100 in quality mode):
//
//   1. Felzenszwalb-Huttenlocher graph segmentation of the Gaussian-smoothed colour image (sigma 0.8, computed
//      by the caller with OpenCV's GaussianBlur so that the float values are OpenCV's). The 4-neighbour edge
//      weights |p - q| (Euclidean over channels, float arithmetic as OpenCV's) are computed and sorted ONCE per
//      colour space and shared by its k values. Then: edges in increasing weight join two components A, B when
//      w <= Int(A) + k / |A| and w <= Int(B) + k / |B| (the threshold of a component becomes w + k / |A u B|
//      after a join); a second pass over the same order joins components smaller than min_size to their first
//      neighbour. Regions are numbered by first appearance in raster order (as OpenCV's finalMapping).
//   2. Per segmentation, one pass over the pixels gives every region's size, bounding box, colour histogram
//      (25 bins per channel, (v * 25) >> 8) and texture histogram (8 oriented derivative maps per channel,
//      10 bins each, made by the caller as OpenCV makes them), and the sparse region adjacency (OpenCV's rule:
//      for pixels with i > 0 and j > 0, the left, upper and upper-left neighbours).
//   3. Hierarchical grouping: repeatedly merge the two most similar neighbouring regions until no neighbours
//      remain. s(a, b) is a weighted mean of
//        colour  sum_i min(Ca_i, Cb_i)   (histograms L1-normalised)
//        texture sum_i min(Ta_i, Tb_i)
//        size    1 - (|a| + |b|) / |image|
//        fill    1 - (|BB(a u b)| - |a| - |b|) / |image|
//      with OpenCV's strategies: 0 = colour, fill, texture, size (weights 0.25); 1 = fill, texture, size
//      (0.3333); 2 = fill; 3 = size. A merged region's histograms are the size-weighted mean of its parts'
//      (OpenCV's float arithmetic, so similarities are bit-identical to OpenCV's for the same regions).
//      Candidate pairs live in a binary max-heap with lazy deletion (an entry whose region was merged away is
//      dropped when it surfaces; similarities of two live regions never change), and each region keeps a
//      short list of its live neighbours: O(E log E) instead of OpenCV's re-sort of the whole list per merge.
//   4. Ranking: each region of grouping g gets rank = level * u, u uniform in (0, 1] from a splitmix64 stream
//      seeded by (seed, g) (OpenCV draws u from the C library's global rand()); all regions of all groupings
//      are sorted by (rank, g, region index), a total order, and boxes are kept at their first occurrence.
//      The boxes and their order depend only on the image, the settings and the seed: not on the number of
//      threads, the process or what ran before.
//
// Parallelism: the sorts (one task per colour space), the segmentations (one per (c, k)) and the groupings
// (one per (c, k, s)) are three rounds of tasks pulled from an atomic counter by at::parallel_for's threads,
// each task writing only its own slot, so one image uses every core and the result is thread-count independent.
//
// Where it can differ from OpenCV's process() for the same single configuration (same box set otherwise):
// edges or region pairs of exactly equal weight / similarity are taken in a different order (OpenCV's
// std::sort is not stable and re-sorts after every merge; we sort stably, and break similarity ties by
// insertion order). With float pixel data such exact ties between different edges are rare except at weight
// 0, where the order provably does not matter (a zero-weight edge always joins).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <queue>
#include <unordered_set>
#include <utility>
#include <vector>

#include "error_message.h"

namespace fastrcnn {
namespace selective_search {
namespace {

constexpr int kColourBins = 25;
constexpr int kTextureBins = 10;
constexpr int kOrientations = 8;

enum Strategy : int { kColourFillTextureSize = 0, kFillTextureSize = 1, kFill = 2, kSize = 3 };

// ---------------------------------------------------------------------------------------------------------
// 1. graph segmentation

struct Edge {
  int32_t a;
  int32_t b;
  float w;
};

// |p - q| over channels, in OpenCV's arithmetic: float differences, squares added in double and stored back
// to a float sum, float square root.
inline float edge_weight(const float* p, const float* q, int channels) {
  float total = 0.f;
  for (int c = 0; c < channels; ++c) {
    const float d = p[c] - q[c];
    total = static_cast<float>(static_cast<double>(total) + static_cast<double>(d) * static_cast<double>(d));
  }
  return std::sqrt(total);
}

// All 4-neighbour edges of the smoothed image (each pair once), stably sorted by weight (LSD radix sort on the
// float's bits; weights are >= 0, so the bit patterns order like the values).
std::vector<Edge> sorted_edges(const float* image, int height, int width, int channels) {
  const int64_t n = static_cast<int64_t>(height) * width;
  std::vector<Edge> edges;
  edges.reserve(static_cast<size_t>(2 * n));
  for (int i = 0; i < height; ++i) {
    for (int j = 0; j < width; ++j) {
      const int32_t p = i * width + j;
      const float* pv = image + static_cast<int64_t>(p) * channels;
      if (j + 1 < width) edges.push_back({p, p + 1, edge_weight(pv, pv + channels, channels)});
      if (i + 1 < height) edges.push_back({p, p + width, edge_weight(pv, pv + static_cast<int64_t>(width) * channels, channels)});
    }
  }
  constexpr int kBits = 11;
  constexpr uint32_t kBuckets = 1u << kBits;
  std::vector<Edge> buffer(edges.size());
  std::vector<size_t> count(kBuckets);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(count.begin(), count.end(), 0);
    for (const Edge& e : edges) {
      uint32_t bits;
      std::memcpy(&bits, &e.w, sizeof bits);
      ++count[(bits >> shift) & (kBuckets - 1)];
    }
    size_t sum = 0;
    for (auto& c : count) {
      const size_t here = c;
      c = sum;
      sum += here;
    }
    for (const Edge& e : edges) {
      uint32_t bits;
      std::memcpy(&bits, &e.w, sizeof bits);
      buffer[count[(bits >> shift) & (kBuckets - 1)]++] = e;
    }
    edges.swap(buffer);
  }
  return edges;
}

// Union-find over pixels; a node keeps its parent, and at a root the set's size and threshold, in one cache
// line access (edges come in weight order, i.e. at random places of the image).
class DisjointSets {
 public:
  DisjointSets(int64_t n, float threshold) : nodes_(static_cast<size_t>(n)) {
    for (int64_t i = 0; i < n; ++i) nodes_[i] = {static_cast<int32_t>(i), 1, threshold};
  }
  int32_t find(int32_t p) {
    while (nodes_[p].parent != p) {
      nodes_[p].parent = nodes_[nodes_[p].parent].parent;  // path halving
      p = nodes_[p].parent;
    }
    return p;
  }
  // joins two roots; returns the new root (the larger set's)
  int32_t join(int32_t a, int32_t b) {
    if (nodes_[a].size < nodes_[b].size) std::swap(a, b);
    nodes_[b].parent = a;
    nodes_[a].size += nodes_[b].size;
    return a;
  }
  int32_t size(int32_t root) const { return nodes_[root].size; }
  void prefetch(int32_t p) const { __builtin_prefetch(&nodes_[p]); }
  float& threshold(int32_t root) { return nodes_[root].threshold; }

 private:
  struct Node {
    int32_t parent;
    int32_t size;
    float threshold;
  };
  std::vector<Node> nodes_;
};

// Region label of every pixel (0 .. n - 1, numbered by first appearance in raster order); returns n.
int segment(const std::vector<Edge>& edges, int64_t pixels, float k, int min_size, std::vector<int32_t>& labels) {
  DisjointSets sets(pixels, k);
  constexpr size_t kAhead = 16;  // edges come in weight order: fetch the nodes of later ones early
  const size_t count = edges.size();
  for (size_t i = 0; i < count; ++i) {
    if (i + kAhead < count) {
      sets.prefetch(edges[i + kAhead].a);
      sets.prefetch(edges[i + kAhead].b);
    }
    const Edge& e = edges[i];
    const int32_t a = sets.find(e.a);
    const int32_t b = sets.find(e.b);
    if (a != b && e.w <= sets.threshold(a) && e.w <= sets.threshold(b)) {
      const int32_t root = sets.join(a, b);
      sets.threshold(root) = e.w + k / static_cast<float>(sets.size(root));
    }
  }
  // Small components join their first neighbour in weight order. Sizes only grow, so an edge whose two pixels
  // both lie in components of at least min_size now can never qualify: only edges touching a small one are
  // visited. (An edge that joined above lies inside one component: no flag is needed for it either.)
  std::vector<uint8_t> small(static_cast<size_t>(pixels));
  for (int64_t p = 0; p < pixels; ++p) small[p] = sets.size(sets.find(static_cast<int32_t>(p))) < min_size;
  for (const Edge& e : edges) {
    if (!(small[e.a] | small[e.b]) || !(e.w > 0.f)) continue;
    sets.prefetch(e.b);
    const int32_t a = sets.find(e.a);
    const int32_t b = sets.find(e.b);
    if (a != b && (sets.size(a) < min_size || sets.size(b) < min_size)) sets.join(a, b);
  }
  labels.assign(static_cast<size_t>(pixels), -1);
  std::vector<int32_t> id_of_root(static_cast<size_t>(pixels), -1);
  int next = 0;
  for (int64_t p = 0; p < pixels; ++p) {
    const int32_t root = sets.find(static_cast<int32_t>(p));
    if (id_of_root[root] < 0) id_of_root[root] = next++;
    labels[p] = id_of_root[root];
  }
  return next;
}

// ---------------------------------------------------------------------------------------------------------
// 2. initial regions

struct Box {
  int32_t x1, y1, x2, y2;  // inclusive
  int64_t area() const { return static_cast<int64_t>(x2 - x1 + 1) * (y2 - y1 + 1); }
  Box operator|(const Box& o) const {
    return {std::min(x1, o.x1), std::min(y1, o.y1), std::max(x2, o.x2), std::max(y2, o.y2)};
  }
};

// What a colour space contributes: its pixels' colour-bin offsets and texture-bin offsets (into a region's
// histogram), computed once and shared by all k and strategies.
struct ColourSpace {
  int height = 0, width = 0, channels = 0;
  std::vector<uint16_t> colour_offsets;   // pixels x channels: c * 25 + bin
  std::vector<uint16_t> texture_offsets;  // pixels x 8 channels: (c * 8 + o) * 10 + bin
  std::vector<Edge> edges;
  int colour_size() const { return kColourBins * channels; }
  int texture_size() const { return kTextureBins * kOrientations * channels; }
};

struct Segmentation {
  int regions = 0;
  std::vector<int32_t> sizes;
  std::vector<Box> boxes;
  std::vector<float> colour;   // regions x colour_size, L1-normalised
  std::vector<float> texture;  // regions x texture_size, L1-normalised
  std::vector<std::pair<int32_t, int32_t>> neighbours;  // (i, j), i < j, sorted
};

Segmentation describe_regions(const ColourSpace& cs, float k, int min_size) {
  const int64_t pixels = static_cast<int64_t>(cs.height) * cs.width;
  std::vector<int32_t> labels;
  Segmentation seg;
  const int n = segment(cs.edges, pixels, k, min_size, labels);
  seg.regions = n;
  seg.sizes.assign(n, 0);
  seg.boxes.assign(n, Box{cs.width, cs.height, -1, -1});
  const int cb = cs.colour_size();
  const int tb = cs.texture_size();
  std::vector<int32_t> colour_counts(static_cast<size_t>(n) * cb, 0);
  std::vector<int32_t> texture_counts(static_cast<size_t>(n) * tb, 0);
  std::vector<uint64_t> pairs;
  const int tc = kOrientations * cs.channels;
  for (int i = 0; i < cs.height; ++i) {
    for (int j = 0; j < cs.width; ++j) {
      const int64_t p = static_cast<int64_t>(i) * cs.width + j;
      const int32_t r = labels[p];
      ++seg.sizes[r];
      Box& b = seg.boxes[r];
      b.x1 = std::min(b.x1, j);
      b.y1 = std::min(b.y1, i);
      b.x2 = std::max(b.x2, j);
      b.y2 = std::max(b.y2, i);
      int32_t* cc = colour_counts.data() + static_cast<int64_t>(r) * cb;
      const uint16_t* co = cs.colour_offsets.data() + p * cs.channels;
      for (int c = 0; c < cs.channels; ++c) ++cc[co[c]];
      int32_t* tcnt = texture_counts.data() + static_cast<int64_t>(r) * tb;
      const uint16_t* to = cs.texture_offsets.data() + p * tc;
      for (int c = 0; c < tc; ++c) ++tcnt[to[c]];
      if (i > 0 && j > 0) {
        const int32_t others[3] = {labels[p - 1], labels[p - cs.width], labels[p - cs.width - 1]};
        for (int32_t q : others) {
          if (q != r) {
            const uint64_t lo = static_cast<uint64_t>(std::min(q, r)), hi = static_cast<uint64_t>(std::max(q, r));
            const uint64_t key = (lo << 32) | hi;
            if (pairs.empty() || pairs.back() != key) pairs.push_back(key);
          }
        }
      }
    }
  }
  std::sort(pairs.begin(), pairs.end());
  pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
  seg.neighbours.reserve(pairs.size());
  for (uint64_t key : pairs) seg.neighbours.emplace_back(static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu));
  // OpenCV: colour histograms are float counts over the sum of all bins; texture counts over 8 * C * |r|
  seg.colour.resize(static_cast<size_t>(n) * cb);
  seg.texture.resize(static_cast<size_t>(n) * tb);
  for (int r = 0; r < n; ++r) {
    const int32_t* cc = colour_counts.data() + static_cast<int64_t>(r) * cb;
    float total = 0.f;
    for (int i = 0; i < cb; ++i) total += static_cast<float>(cc[i]);
    float* ch = seg.colour.data() + static_cast<int64_t>(r) * cb;
    for (int i = 0; i < cb; ++i) ch[i] = static_cast<float>(cc[i]) / total;
    const int32_t* tcnt = texture_counts.data() + static_cast<int64_t>(r) * tb;
    const float ttotal = static_cast<float>(tc * seg.sizes[r]);
    float* th = seg.texture.data() + static_cast<int64_t>(r) * tb;
    for (int i = 0; i < tb; ++i) th[i] = static_cast<float>(tcnt[i]) / ttotal;
  }
  return seg;
}

// ---------------------------------------------------------------------------------------------------------
// 3. hierarchical grouping

struct Region {
  Box box;
  int32_t level;
};

inline float intersection(const float* a, const float* b, int n) {
  float r = 0.f;
  for (int i = 0; i < n; ++i) r += std::min(a[i], b[i]);  // in order, as OpenCV (float sums do not reassociate)
  return r;
}

inline float clamp01(float v) { return std::max(std::min(v, 1.0f), 0.0f); }

class Grouping {
 public:
  Grouping(const Segmentation& seg, int colour_size, int texture_size, int strategy, int64_t image_size)
      : strategy_(strategy), cb_(colour_size), tb_(texture_size), image_size_(static_cast<float>(image_size)) {
    uses_colour_ = strategy == kColourFillTextureSize;
    uses_texture_ = strategy == kColourFillTextureSize || strategy == kFillTextureSize;
    if (uses_colour_) colour_ = seg.colour;
    if (uses_texture_) texture_ = seg.texture;
    const int n = seg.regions;
    regions_.reserve(static_cast<size_t>(2 * n));
    for (int r = 0; r < n; ++r) {
      regions_.push_back({seg.boxes[r], 1});
      id_.push_back(r);
      size_.push_back(seg.sizes[r]);
      alive_.push_back(1);
    }
    neighbours_.resize(n);
    for (const auto& pr : seg.neighbours) {
      neighbours_[pr.first].push_back(pr.second);
      neighbours_[pr.second].push_back(pr.first);
    }
    // OpenCV's weights: equal weights of 0.25f (four parts) or 0.3333f (three), divided by their float sum
    if (strategy == kColourFillTextureSize) {
      weight_ = 0.25f;
      total_ = 0.f;
      for (int i = 0; i < 4; ++i) total_ += weight_;
    } else if (strategy == kFillTextureSize) {
      weight_ = 0.3333f;
      total_ = 0.f;
      for (int i = 0; i < 3; ++i) total_ += weight_;
    }
    for (const auto& pr : seg.neighbours) push(pr.first, pr.second);
  }

  std::vector<Region> run() {
    while (!heap_.empty()) {
      const Candidate top = heap_.top();
      heap_.pop();
      if (!alive_[top.a] || !alive_[top.b]) continue;
      merge(top.a, top.b);
    }
    return std::move(regions_);
  }

 private:
  struct Candidate {
    float similarity;
    uint32_t order;  // insertion order: earlier first among equal similarities
    int32_t a, b;
    bool operator<(const Candidate& o) const {  // "less urgent than"
      if (similarity != o.similarity) return similarity < o.similarity;
      return order > o.order;
    }
  };

  float similarity(int32_t a, int32_t b) const {
    const int32_t ia = id_[a], ib = id_[b];
    const int32_t sa = size_[a], sb = size_[b];
    const float size = clamp01(1.0f - static_cast<float>(sa + sb) / image_size_);
    const int64_t box = (regions_[a].box | regions_[b].box).area();
    const float fill = clamp01(1.0f - static_cast<float>(box - sa - sb) / image_size_);
    switch (strategy_) {
      case kFill:
        return fill;
      case kSize:
        return size;
      default:
        break;
    }
    const float texture = intersection(&texture_[static_cast<int64_t>(ia) * tb_], &texture_[static_cast<int64_t>(ib) * tb_], tb_);
    float total = 0.f;
    if (uses_colour_) {
      const float colour = intersection(&colour_[static_cast<int64_t>(ia) * cb_], &colour_[static_cast<int64_t>(ib) * cb_], cb_);
      total += weight_ * colour;
    }
    total += weight_ * fill;
    total += weight_ * texture;
    total += weight_ * size;
    return total / total_;
  }

  void push(int32_t a, int32_t b) { heap_.push({similarity(a, b), next_order_++, a, b}); }

  static void merge_histograms(float* h1, const float* h2, int n, int32_t s1, int32_t s2) {
    const float f1 = static_cast<float>(s1), f2 = static_cast<float>(s2), f = static_cast<float>(s1 + s2);
    for (int i = 0; i < n; ++i) h1[i] = (h1[i] * f1 + h2[i] * f2) / f;
  }

  void merge(int32_t a, int32_t b) {
    const int32_t m = static_cast<int32_t>(regions_.size());
    const int32_t id = std::min(id_[a], id_[b]);
    const int32_t other = std::max(id_[a], id_[b]);
    const int32_t sid = (id == id_[a]) ? size_[a] : size_[b];
    const int32_t sother = (id == id_[a]) ? size_[b] : size_[a];
    if (uses_colour_) merge_histograms(&colour_[static_cast<int64_t>(id) * cb_], &colour_[static_cast<int64_t>(other) * cb_], cb_, sid, sother);
    if (uses_texture_) merge_histograms(&texture_[static_cast<int64_t>(id) * tb_], &texture_[static_cast<int64_t>(other) * tb_], tb_, sid, sother);
    regions_.push_back({regions_[a].box | regions_[b].box, std::max(regions_[a].level, regions_[b].level) + 1});
    id_.push_back(id);
    size_.push_back(size_[a] + size_[b]);
    alive_.push_back(1);
    alive_[a] = 0;
    alive_[b] = 0;
    std::vector<int32_t> around;
    around.reserve(neighbours_[a].size() + neighbours_[b].size());
    for (int32_t r : {a, b}) {
      for (int32_t c : neighbours_[r]) {
        if (c == a || c == b || std::find(around.begin(), around.end(), c) != around.end()) continue;
        around.push_back(c);
        auto& list = neighbours_[c];
        list.erase(std::remove_if(list.begin(), list.end(), [&](int32_t x) { return x == a || x == b; }), list.end());
        list.push_back(m);
      }
    }
    std::vector<int32_t>().swap(neighbours_[a]);
    std::vector<int32_t>().swap(neighbours_[b]);
    neighbours_.push_back(around);
    for (int32_t c : around) push(m, c);
  }

  int strategy_;
  int cb_, tb_;
  float image_size_;
  bool uses_colour_ = false, uses_texture_ = false;
  float weight_ = 1.f, total_ = 1.f;
  std::vector<float> colour_, texture_;  // indexed by working id (the smallest initial region id of a region)
  std::vector<Region> regions_;
  std::vector<int32_t> id_, size_;
  std::vector<uint8_t> alive_;
  std::vector<std::vector<int32_t>> neighbours_;
  std::priority_queue<Candidate> heap_;
  uint32_t next_order_ = 0;
};

// ---------------------------------------------------------------------------------------------------------
// 4. ranking

inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// uniform in (0, 1]: 53 random bits
inline double uniform(uint64_t& state) { return (static_cast<double>(splitmix64(state) >> 11) + 1.0) * 0x1.0p-53; }

// Runs task(i) for i in [0, n) on at::parallel_for's threads, each task pulled from a shared counter.
void run_tasks(int64_t n, const std::function<void(int64_t)>& task) {
  if (n <= 0) return;
  const int64_t workers = std::min<int64_t>(n, at::get_num_threads());
  std::atomic<int64_t> next{0};
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    for (int64_t i = next++; i < n; i = next++) task(i);
  });
}

ColourSpace prepare(const at::Tensor& image, const at::Tensor& smoothed, const at::Tensor& texture) {
  TORCH_CHECK(image.dim() == 3 && image.scalar_type() == at::kByte && image.is_contiguous(),
              "selective_search: each image must be a contiguous uint8 [H, W, C] tensor");
  const int h = static_cast<int>(image.size(0)), w = static_cast<int>(image.size(1)), c = static_cast<int>(image.size(2));
  TORCH_CHECK(h > 0 && w > 0 && c > 0 && c <= 4, "selective_search: an image needs pixels and 1 to 4 channels");
  TORCH_CHECK(smoothed.dim() == 3 && smoothed.scalar_type() == at::kFloat && smoothed.is_contiguous() &&
                  smoothed.size(0) == h && smoothed.size(1) == w && smoothed.size(2) == c,
              "selective_search: smoothed images must be contiguous float32 [H, W, C] like their image");
  TORCH_CHECK(texture.dim() == 3 && texture.scalar_type() == at::kByte && texture.is_contiguous() &&
                  texture.size(0) == h && texture.size(1) == w && texture.size(2) == kOrientations * c,
              "selective_search: texture maps must be contiguous uint8 [H, W, 8 C] like their image");
  TORCH_CHECK(static_cast<int64_t>(h) * w < (int64_t(1) << 31), "selective_search: image too large");
  ColourSpace cs;
  cs.height = h;
  cs.width = w;
  cs.channels = c;
  const int64_t pixels = static_cast<int64_t>(h) * w;
  const uint8_t* px = image.data_ptr<uint8_t>();
  cs.colour_offsets.resize(static_cast<size_t>(pixels * c));
  for (int64_t p = 0; p < pixels; ++p) {
    for (int ch = 0; ch < c; ++ch) {
      cs.colour_offsets[p * c + ch] = static_cast<uint16_t>(ch * kColourBins + ((px[p * c + ch] * kColourBins) >> 8));
    }
  }
  // OpenCV: bin = (int)((float)v / (256 / 10)) of the 0..255-normalised derivative map
  uint8_t bin_of[256];
  for (int v = 0; v < 256; ++v) bin_of[v] = static_cast<uint8_t>(static_cast<int>(static_cast<float>(v) / (256.0f / kTextureBins)));
  const uint8_t* tx = texture.data_ptr<uint8_t>();
  const int tc = kOrientations * c;
  cs.texture_offsets.resize(static_cast<size_t>(pixels * tc));
  for (int64_t p = 0; p < pixels; ++p) {
    const uint8_t* v = tx + p * tc;
    uint16_t* o = cs.texture_offsets.data() + p * tc;
    for (int ch = 0; ch < tc; ++ch) o[ch] = static_cast<uint16_t>(ch * kTextureBins + bin_of[v[ch]]);
  }
  cs.edges = sorted_edges(smoothed.data_ptr<float>(), h, w, c);
  return cs;
}

// Boxes (x, y, w, h) of Selective Search on the given colour spaces: int32 [N, 4], ranked, without duplicates.
at::Tensor selective_search(at::TensorList images, at::TensorList smoothed, at::TensorList textures,
                            at::ArrayRef<double> ks, at::IntArrayRef strategies, int64_t min_size, int64_t seed) {
  const int64_t nc = static_cast<int64_t>(images.size());
  TORCH_CHECK(nc > 0, "selective_search: no colour space given");
  TORCH_CHECK(static_cast<int64_t>(smoothed.size()) == nc && static_cast<int64_t>(textures.size()) == nc,
              "selective_search: one smoothed image and one texture map per colour space");
  TORCH_CHECK(!ks.empty() && !strategies.empty(), "selective_search: no k values or no strategies given");
  for (int64_t s : strategies) TORCH_CHECK(s >= 0 && s <= 3, message("selective_search: unknown strategy ", s));
  for (double k : ks) TORCH_CHECK(k > 0 && std::isfinite(k), message("selective_search: k must be positive, got ", k));
  for (int64_t i = 0; i < nc; ++i) {
    TORCH_CHECK(images[i].size(0) == images[0].size(0) && images[i].size(1) == images[0].size(1),
                "selective_search: all colour spaces must have the same size");
  }
  const int64_t nk = static_cast<int64_t>(ks.size()), ns = static_cast<int64_t>(strategies.size());

  std::vector<ColourSpace> spaces(static_cast<size_t>(nc));
  run_tasks(nc, [&](int64_t c) { spaces[c] = prepare(images[c], smoothed[c], textures[c]); });

  std::vector<Segmentation> segs(static_cast<size_t>(nc * nk));
  run_tasks(nc * nk, [&](int64_t t) {
    segs[t] = describe_regions(spaces[t / nk], static_cast<float>(ks[t % nk]), static_cast<int>(min_size));
  });
  for (auto& cs : spaces) std::vector<Edge>().swap(cs.edges);

  // grouping g = (c * nk + k) * ns + s, the order of OpenCV's loops
  const int64_t ng = nc * nk * ns;
  std::vector<std::vector<Region>> groups(static_cast<size_t>(ng));
  const int64_t image_size = static_cast<int64_t>(spaces[0].height) * spaces[0].width;
  run_tasks(ng, [&](int64_t g) {
    const ColourSpace& cs = spaces[g / (nk * ns)];
    Grouping grouping(segs[g / ns], cs.colour_size(), cs.texture_size(), static_cast<int>(strategies[g % ns]), image_size);
    groups[g] = grouping.run();
  });

  struct Ranked {
    double rank;
    int32_t group, index;
  };
  std::vector<Ranked> ranked;
  for (int64_t g = 0; g < ng; ++g) {
    uint64_t state = static_cast<uint64_t>(seed) * 0xD1B54A32D192ED03ull + static_cast<uint64_t>(g);
    splitmix64(state);
    for (size_t r = 0; r < groups[g].size(); ++r) {
      ranked.push_back({uniform(state) * groups[g][r].level, static_cast<int32_t>(g), static_cast<int32_t>(r)});
    }
  }
  std::sort(ranked.begin(), ranked.end(), [](const Ranked& x, const Ranked& y) {
    if (x.rank != y.rank) return x.rank < y.rank;
    if (x.group != y.group) return x.group < y.group;
    return x.index < y.index;
  });
  struct BoxHash {
    size_t operator()(const std::pair<uint64_t, uint64_t>& k) const {
      return std::hash<uint64_t>()(k.first * 0x9E3779B97F4A7C15ull ^ k.second);
    }
  };
  std::unordered_set<std::pair<uint64_t, uint64_t>, BoxHash> seen;
  seen.reserve(ranked.size());
  std::vector<int32_t> out;
  out.reserve(ranked.size() * 4);
  for (const Ranked& r : ranked) {
    const Box& b = groups[r.group][r.index].box;
    const int32_t x = b.x1, y = b.y1, w = b.x2 - b.x1 + 1, h = b.y2 - b.y1 + 1;
    const auto key = std::make_pair((static_cast<uint64_t>(static_cast<uint32_t>(x)) << 32) | static_cast<uint32_t>(y),
                                    (static_cast<uint64_t>(static_cast<uint32_t>(w)) << 32) | static_cast<uint32_t>(h));
    if (!seen.insert(key).second) continue;
    out.insert(out.end(), {x, y, w, h});
  }
  at::Tensor result = at::empty({static_cast<int64_t>(out.size() / 4), 4}, at::TensorOptions().dtype(at::kInt));
  if (!out.empty()) std::memcpy(result.data_ptr<int32_t>(), out.data(), out.size() * sizeof(int32_t));
  return result;
}

// The graph segmentation alone (for comparisons with OpenCV's GraphSegmentation): int32 [H, W] region labels.
at::Tensor graph_segmentation(const at::Tensor& smoothed, double k, int64_t min_size) {
  TORCH_CHECK(smoothed.dim() == 3 && smoothed.scalar_type() == at::kFloat && smoothed.is_contiguous(),
              "graph_segmentation: smoothed must be a contiguous float32 [H, W, C] tensor");
  const int h = static_cast<int>(smoothed.size(0)), w = static_cast<int>(smoothed.size(1)), c = static_cast<int>(smoothed.size(2));
  TORCH_CHECK(h > 0 && w > 0 && c > 0, "graph_segmentation: empty image");
  const std::vector<Edge> edges = sorted_edges(smoothed.data_ptr<float>(), h, w, c);
  std::vector<int32_t> labels;
  segment(edges, static_cast<int64_t>(h) * w, static_cast<float>(k), static_cast<int>(min_size), labels);
  at::Tensor result = at::empty({h, w}, at::TensorOptions().dtype(at::kInt));
  std::memcpy(result.data_ptr<int32_t>(), labels.data(), labels.size() * sizeof(int32_t));
  return result;
}

}  // namespace
}  // namespace selective_search
}  // namespace fastrcnn

TORCH_LIBRARY_FRAGMENT(fastrcnn, m) {
  // images[c]: uint8 [H, W, C] colour space c; smoothed[c]: its float32 Gaussian-smoothed copy (sigma 0.8);
  // textures[c]: uint8 [H, W, 8 C] its oriented derivative maps scaled to 0..255. Returns int32 [N, 4] boxes
  // (x, y, width, height), ranked. See selective_search.cpp for the algorithm.
  m.def(
      "selective_search(Tensor[] images, Tensor[] smoothed, Tensor[] textures, float[] ks, int[] strategies, "
      "int min_size, int seed) -> Tensor",
      &fastrcnn::selective_search::selective_search);
  m.def("graph_segmentation(Tensor smoothed, float k, int min_size) -> Tensor",
        &fastrcnn::selective_search::graph_segmentation);
}
