// The fastrcnn operator library: schemas of the RoI max pooling operator (Fast R-CNN, section 2.1).
//
// Kernels are registered per device: roi_pool_cpu.cpp (CPU) and roi_pool_cuda.cpp / roi_pool_cuda.cu (CUDA, a
// separate library that is built and loaded only where CUDA is wanted). The Python side
// (fastrcnn_cli/ops/roi_pool.py) adds the fake (meta) kernels and the autograd formula.
#include <torch/library.h>

TORCH_LIBRARY(fastrcnn, m) {
  // output [K, C, pooled_height, pooled_width] and argmax (int32, flat h * W + w in the (batch, channel) plane,
  // -1 for an empty bin). rois: [K, 5] rows of (batch_index, x1, y1, x2, y2), the dtype of input.
  m.def(
      "roi_pool(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width) "
      "-> (Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // the output of roi_pool alone, bit-identical, for when no gradient is wanted: no argmax is computed or stored
  m.def(
      "roi_pool_inference(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width) "
      "-> Tensor",
      {at::Tag::pt2_compliant_tag});
  // grad_input [batch_size, channels, height, width] (contiguous): grad scattered to the argmax positions.
  m.def(
      "roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, int pooled_height, "
      "int pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
      {at::Tag::pt2_compliant_tag});
}
