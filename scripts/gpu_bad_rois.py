"""Exercise every CUDA RoI pooling kernel, bad RoIs included, for a memory checker (compute-sanitizer memcheck).

Run by scripts/gpu_check.sh as ``compute-sanitizer --tool memcheck python3 scripts/gpu_bad_rois.py``: the
inference form gets RoIs no check has seen (NaN, inf, huge, batch indices naming no image); the training
forward and the backward get valid ones in every dtype. Prints one line per case; any out-of-bounds access is
reported by the sanitizer, not by this script.
"""

from __future__ import annotations

import torch

from fastrcnn_cli.ops import load_extension, roi_pool


def main() -> None:
    load_extension(with_cuda=True)
    nan, inf = float("nan"), float("inf")
    bad = torch.tensor(
        [[0, nan, 0.0, 50.0, 50.0], [1, 0.0, 0.0, inf, inf], [0, -inf, -inf, 40.0, 40.0],
         [1, -1e30, -1e30, 1e30, 1e30], [5, 0.0, 0.0, 60.0, 60.0], [-3, 0.0, 0.0, 60.0, 60.0],
         [nan, 0.0, 0.0, 60.0, 60.0], [0, 5e9, 5e9, 6e9, 6e9], [1, 100.0, 90.0, 10.0, 5.0],
         [1, 2000.0, 2000.0, 2100.0, 2100.0], [0, -500.0, -500.0, -100.0, -100.0]],
        device="cuda",
    )
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for channels in (1, 31, 67):
            x = torch.randn(2, channels, 9, 13, device="cuda", generator=gen).to(dtype)
            out = torch.ops.fastrcnn.roi_pool_inference(x, bad.to(dtype), 1 / 16, 7, 7)
            torch.cuda.synchronize()
            good = torch.rand(300, 5, device="cuda", generator=gen) * torch.tensor([2, 220, 150, 220, 150], device="cuda")
            good[:, 0] = good[:, 0].floor()
            good[:, 3:] += good[:, 1:3]
            xg = x.clone().requires_grad_(True)
            pooled = roi_pool(xg, good.to(dtype), (7, 5), 1 / 16)
            (grad,) = torch.autograd.grad(pooled, xg, torch.randn_like(pooled))
            torch.cuda.synchronize()
            print(f"{dtype} C={channels}: inference on bad RoIs {tuple(out.shape)} finite={bool(out.isfinite().all())}, "
                  f"forward+backward on 300 RoIs grad finite={bool(grad.isfinite().all())}")


if __name__ == "__main__":
    main()
