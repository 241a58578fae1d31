"""Custom operators of fastrcnn: RoI max pooling (Fast R-CNN, section 2.1), native on CPU and CUDA.

``roi_pool(input, rois, output_size, spatial_scale)`` and ``RoIPool`` are the public face; the native operator is
``torch.ops.fastrcnn.roi_pool`` (built on first use, see :mod:`fastrcnn_cli.ops._extension`), the pure-PyTorch
reference :func:`roi_pool_reference`; the timing harness is ``fastrcnn_cli.ops.bench.benchmark_roi_pool`` (not
imported here, so that ``python -m fastrcnn_cli.ops.bench`` runs cleanly).
"""

from fastrcnn_cli.ops._extension import load_extension
from fastrcnn_cli.ops.reference import roi_pool_backward_reference, roi_pool_reference
from fastrcnn_cli.ops.roi_pool import RoIPool, check_rois, roi_pool, rois_from_boxes

__all__ = [
    "RoIPool",
    "check_rois",
    "load_extension",
    "roi_pool",
    "roi_pool_backward_reference",
    "roi_pool_reference",
    "rois_from_boxes",
]
