"""The checked CUDA forward refusing a RoI whose batch index names no image: a ValueError, or (seen on an H200
with torch 2.11) a crash. Run by scripts/gpu_check.sh debug, alone and under cuda-gdb for a native backtrace."""

import faulthandler

import torch

from fastrcnn_cli.ops import load_extension

faulthandler.enable()
load_extension(with_cuda=True)
x = torch.randn(2, 8, 5, 5, device="cuda")
rois = torch.tensor([[0, 0.0, 0.0, 30.0, 30.0], [2, 0.0, 0.0, 30.0, 30.0]], device="cuda")
for op in ("int input", "roi_pool"):
    try:
        if op == "roi_pool":
            torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 7, 7)
        else:  # an integer input: the shared argument check throws before any tensor work
            torch.ops.fastrcnn.roi_pool(x.int(), rois.int(), 1 / 16, 7, 7)
        print(op, "returned")
    except (ValueError, RuntimeError) as exc:
        print(op, "raised", type(exc).__name__, exc)
