#!/usr/bin/env python
"""Check and time fastrcnn's CUDA RoI max pooling against torchvision, on a machine with a GPU.

    python scripts/gpu_roi_pool_check.py [--runs 50] [--warmup 10] [--rois 2000] [--markdown]

1. Builds (or loads from the cache) the CPU and CUDA operators; the build time is printed.
2. Checks, on the GPU, for float32, float64 and float16: forward output and argmax bit-identical to
   ``torchvision.ops.roi_pool`` (random shapes, scales 1/16 and 1/8, 7 x 7 and 6 x 6, RoIs on .5 boundaries,
   partly and wholly outside, contiguous and channels-last inputs, the VGG16 conv5 case), and input gradients
   close to torchvision's (the CUDA backward uses atomics in both, so the order of additions differs; float16
   accumulates in float32 here). bfloat16, which torchvision lacks, is checked against the pure-PyTorch reference.
3. Times both on the VGG16 conv5 case (1 x 512 x 38 x 63, 2000 Selective-Search-like RoIs, 7 x 7, 1/16),
   forward and forward + backward, with CUDA events after a warm-up (medians, min - max), and prints a table
   (and, with --markdown, a Markdown table on stdout for the issue).

Exit status: 0 if every check passed, 1 if one failed, 2 if there is no GPU (nothing is checked then).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402


def _cases(device: str, dtype: torch.dtype):
    """(name, input, rois, scale, output size) for the checks."""
    from fastrcnn_cli.ops.bench import selective_search_like_rois

    gen = torch.Generator().manual_seed(0)
    shapes = [(1, 3, 10, 12), (2, 37, 19, 31), (2, 64, 24, 17), (3, 130, 38, 63), (1, 1, 6, 6), (2, 513, 9, 14)]
    for i, (n, c, h, w) in enumerate(shapes):
        for scale, size in ((1 / 16, (7, 7)), (1 / 8, (6, 6))):
            k = 200
            x = torch.randn(n, c, h, w, generator=gen)
            x1, y1 = torch.rand(k, generator=gen) * w / scale, torch.rand(k, generator=gen) * h / scale
            wh = torch.rand(k, 2, generator=gen) * torch.tensor([w, h]) / scale
            boxes = torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], 1)
            on_half = (torch.randint(-2, max(h, w) + 2, (k // 4, 4), generator=gen) + 0.5) / scale
            boxes[: k // 4] = torch.cat([on_half[:, :2], on_half[:, :2] + on_half[:, 2:].abs()], 1)
            boxes[-3:] = torch.tensor([[-100.0, -100.0, 50.0, 50.0], [1e4, 1e4, 2e4, 2e4], [40.0, 40.0, 10.0, 10.0]])
            rois = torch.cat([torch.randint(0, n, (k, 1), generator=gen).float(), boxes], 1)
            x, rois = x.to(device, dtype), rois.to(device, dtype)
            yield f"{n}x{c}x{h}x{w} s={scale:g} {size[0]}x{size[1]}", x, rois, scale, size
            if i % 2 == 0:
                yield (
                    f"{n}x{c}x{h}x{w} s={scale:g} {size[0]}x{size[1]} channels-last",
                    x.contiguous(memory_format=torch.channels_last),
                    rois,
                    scale,
                    size,
                )
    x = torch.randn(1, 512, 38, 63, generator=gen).to(device, dtype)
    rois = selective_search_like_rois(2000, seed=1).to(device, dtype)
    yield "VGG16 conv5 1x512x38x63, 2000 RoIs", x, rois, 1 / 16, (7, 7)


def check(dtype: torch.dtype) -> list[str]:
    """Failures (empty if all passed) of the CUDA operator against torchvision (or the reference)."""
    import torchvision  # noqa: F401  (registers torch.ops.torchvision.roi_pool)

    from fastrcnn_cli.ops import roi_pool, roi_pool_backward_reference, roi_pool_reference

    failures = []
    for name, x, rois, scale, (ph, pw) in _cases("cuda", dtype):
        out, arg = torch.ops.fastrcnn.roi_pool(x, rois, scale, ph, pw)
        if dtype == torch.bfloat16:  # torchvision has no bfloat16 RoI pooling
            ref_out, ref_arg = roi_pool_reference(x, rois, (ph, pw), scale)
            against = "reference"
        else:
            try:
                ref_out, ref_arg = torch.ops.torchvision.roi_pool(x.contiguous(), rois, scale, ph, pw)
                against = "torchvision"
            except (RuntimeError, AttributeError) as exc:
                failures.append(f"{dtype} {name}: torchvision's roi_pool raised {type(exc).__name__}: {exc}")
                continue
        if not torch.equal(arg, ref_arg):
            bad = int((arg != ref_arg).sum())
            failures.append(f"{dtype} {name}: argmax differs from {against} at {bad} places")
        if not torch.equal(out, ref_out):
            bad = int((out != ref_out).sum())
            failures.append(f"{dtype} {name}: output differs from {against} at {bad} places")

        grad = torch.randn(out.shape, device="cuda").to(dtype)
        xg = x.detach().requires_grad_(True)
        (ours,) = torch.autograd.grad(roi_pool(xg, rois, (ph, pw), scale), xg, grad)
        if dtype in (torch.float16, torch.bfloat16):
            # ours adds the gradients in float32, torchvision in float16 (up to 0.04 off on an H100 for overlapping
            # RoIs): the yardstick is the exact sum, in float64, of the gradients at the argmax checked above
            theirs = roi_pool_backward_reference(grad.double(), rois, arg, tuple(x.shape))
            against = "the exact float64 sum at the argmax"
        elif against == "torchvision":
            import torchvision

            xt = x.detach().requires_grad_(True)
            (theirs,) = torch.autograd.grad(torchvision.ops.roi_pool(xt, rois, (ph, pw), scale), xt, grad)
        else:
            xt = x.detach().requires_grad_(True)
            out_ref, _ = roi_pool_reference(xt, rois, (ph, pw), scale)
            (theirs,) = torch.autograd.grad(out_ref, xt, grad)
        # float32: both sides add with atomics, in different orders, and sums of a few hundred overlapping terms
        # differ in the last bits; half: one rounding of the float32 sum
        rtol, atol = {
            torch.float16: (1e-3, 1e-3), torch.bfloat16: (8e-3, 8e-3), torch.float32: (1e-5, 1e-4)
        }.get(dtype, (1e-9, 1e-9))
        try:
            torch.testing.assert_close(ours.float(), theirs.float(), rtol=rtol, atol=atol)
        except AssertionError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines()[1:4])
            failures.append(f"{dtype} {name}: gradient differs from {against}: {detail}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rois", type=int, default=2000)
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table on stdout")
    args = parser.parse_args(argv)

    from fastrcnn_cli import console

    if not torch.cuda.is_available():
        console.err.print(
            "no CUDA GPU is visible (torch.cuda.is_available() is False): this script checks and times the CUDA "
            "RoI pooling kernel on a GPU machine. Nothing was checked."
        )
        return 2

    from fastrcnn_cli.ops import load_extension
    from fastrcnn_cli.ops.bench import benchmark_roi_pool, print_benchmark

    started = time.perf_counter()
    state = load_extension(with_cuda=True)
    console.info(
        f"operator loaded in {time.perf_counter() - started:.1f} s "
        f"(compile times: {state.build_seconds or 'none, cached'}); GPU: {torch.cuda.get_device_name()}, "
        f"torch {torch.__version__}"
    )

    failures = []
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        found = check(dtype)
        failures += found
        console.info(f"{str(dtype):15} {'ok' if not found else f'{len(found)} FAILED'}")
    for failure in failures:
        console.err.print(f"[red]FAILED[/red] {failure}")

    rows = []
    for dtype in (torch.float32, torch.float16, torch.float64):
        result = benchmark_roi_pool(
            device="cuda",
            num_rois=args.rois,
            runs=args.runs,
            warmup=args.warmup,
            dtype=dtype,
            implementations=("fastrcnn", "torchvision"),
        )
        print_benchmark(result)
        rows.append(result)

    if args.markdown:
        print(f"RoI max pooling on {torch.cuda.get_device_name()}, 1 x 512 x 38 x 63, {args.rois} RoIs, 7 x 7, "
              f"1/16; median ms over {args.runs} runs (CUDA events, {args.warmup} warm-up)\n")
        print(
            "| dtype | fastrcnn fwd | torchvision fwd | speed-up "
            "| fastrcnn fwd+bwd | torchvision fwd+bwd | speed-up |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            cells = [r.dtype]
            for phase in ("forward", "forward_backward"):
                ours = r.timings.get("fastrcnn", {}).get(phase)
                theirs = r.timings.get("torchvision", {}).get(phase)
                ratio = r.speedup(phase)
                cells += [
                    f"{ours.median_ms:.3f}" if ours else "-",
                    f"{theirs.median_ms:.3f}" if theirs else "-",
                    f"{ratio:.2f}x" if ratio else "-",
                ]
            print("| " + " | ".join(cells) + " |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
