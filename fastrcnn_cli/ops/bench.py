"""Timing RoI max pooling: fastrcnn's native operator against ``torchvision.ops.roi_pool`` and the reference.

:func:`benchmark_roi_pool` returns a :class:`RoIPoolBenchmark` (``to_dict()`` for JSON) for the
``fastrcnn benchmark`` command; :func:`print_benchmark` prints it as a table on stderr. Run
``python -m fastrcnn_cli.ops.bench [--device cuda] [--runs N]`` for a quick look.

The default case is Fast R-CNN's VGG16 at test time: one 600 x 1000 image, conv5 map 1 x 512 x 38 x 63
(Caffe's ceil-mode pooling), 2000 proposals, 7 x 7 bins, spatial scale 1/16. The proposals imitate Selective
Search: widths and heights log-uniform from 16 px to the image size, positions uniform inside the image,
integer corners. Each implementation is timed forward only and forward + backward (gradient of the input);
the runs of the implementations are interleaved, so that a busy machine slows them alike. CPU times are wall
clock (``time.perf_counter``); CUDA times are CUDA events on the current stream after a synchronisation.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fastrcnn_cli import progress
from fastrcnn_cli.timing import TimingStats

#: "fastrcnn-no-argmax": our operator's inference form (``roi_pool_inference``), forward only
IMPLEMENTATIONS = ("fastrcnn", "fastrcnn-no-argmax", "torchvision", "reference")
PHASES = ("forward", "forward_backward")


@dataclass
class RoIPoolBenchmark:
    device: str
    device_name: str
    dtype: str
    feature_shape: tuple[int, int, int, int]
    num_rois: int
    output_size: tuple[int, int]
    spatial_scale: float
    threads: int
    torch_version: str
    #: implementation -> phase ("forward", "forward_backward") -> timings
    timings: dict[str, dict[str, TimingStats]] = field(default_factory=dict)
    #: implementation -> why it was not timed (not installed, build failed, ...)
    skipped: dict[str, str] = field(default_factory=dict)
    #: forward output and argmax of fastrcnn identical to torchvision's (None if either was not run)
    matches_torchvision: bool | None = None
    #: output of the inference form (no argmax) bit-identical to the forward's (None if either was not run)
    no_argmax_identical: bool | None = None

    def speedup(self, phase: str, baseline: str = "torchvision", impl: str = "fastrcnn") -> float | None:
        """How many times faster ``impl`` is than ``baseline`` (ratio of medians), or None."""
        try:
            return self.timings[baseline][phase].median / self.timings[impl][phase].median
        except (KeyError, ZeroDivisionError):
            return None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON: the timings in milliseconds (:meth:`TimingStats.to_dict`) and the speedups."""
        data: dict[str, Any] = {
            "device": self.device,
            "device_name": self.device_name,
            "dtype": self.dtype,
            "feature_shape": list(self.feature_shape),
            "num_rois": self.num_rois,
            "output_size": list(self.output_size),
            "spatial_scale": self.spatial_scale,
            "threads": self.threads,
            "torch_version": self.torch_version,
            "timings": {impl: {phase: t.to_dict() for phase, t in phases.items()}
                        for impl, phases in self.timings.items()},
            "skipped": dict(self.skipped),
            "matches_torchvision": self.matches_torchvision,
            "no_argmax_identical": self.no_argmax_identical,
        }
        data["speedup_vs_torchvision"] = {phase: self.speedup(phase) for phase in PHASES}
        data["speedup_vs_reference"] = {phase: self.speedup(phase, baseline="reference") for phase in PHASES}
        data["no_argmax_speedup"] = self.speedup("forward", baseline="fastrcnn", impl="fastrcnn-no-argmax")
        return data


def selective_search_like_rois(
    num_rois: int, image_height: int = 600, image_width: int = 1000, seed: int = 0, batch_size: int = 1
) -> Tensor:
    """[K, 5] float32 RoIs (batch index, x1, y1, x2, y2) that look like Selective Search proposals."""
    g = torch.Generator().manual_seed(seed)
    w = torch.exp(torch.empty(num_rois).uniform_(math.log(16), math.log(image_width), generator=g))
    h = torch.exp(torch.empty(num_rois).uniform_(math.log(16), math.log(image_height), generator=g))
    w, h = w.round().clamp(1, image_width), h.round().clamp(1, image_height)
    x1 = (torch.rand(num_rois, generator=g) * (image_width - w + 1)).floor()
    y1 = (torch.rand(num_rois, generator=g) * (image_height - h + 1)).floor()
    b = torch.randint(0, batch_size, (num_rois,), generator=g).float()
    return torch.stack([b, x1, y1, x1 + w - 1, y1 + h - 1], dim=1)


def benchmark_roi_pool(
    device: str | torch.device = "cpu",
    feature_shape: tuple[int, int, int, int] = (1, 512, 38, 63),
    num_rois: int = 2000,
    output_size: int | tuple[int, int] = 7,
    spatial_scale: float = 1.0 / 16,
    runs: int = 10,
    warmup: int = 2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    implementations: Sequence[str] = IMPLEMENTATIONS,
    reference_runs: int = 2,
    image_size: tuple[int, int] = (600, 1000),
) -> RoIPoolBenchmark:
    """Time RoI pooling implementations on one synthetic case; see the module docstring.

    ``image_size`` is the (height, width) of the image the RoIs are drawn on (600 x 1000, whose VGG16 conv5 map is
    the default 38 x 63); change it with ``feature_shape``. The reference, much slower, is timed
    ``reference_runs`` times, without warm-up. Implementations that are unavailable are in ``skipped``.
    """
    from fastrcnn_cli.ops import _extension, roi_pool_reference

    device = torch.device(device)
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    n, c, height, width = feature_shape
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(feature_shape, generator=g).to(device=device, dtype=dtype)
    rois = selective_search_like_rois(num_rois, *image_size, seed=seed, batch_size=n).to(device=device, dtype=dtype)
    grad_output = torch.randn((num_rois, c, ph, pw), generator=g).to(device=device, dtype=dtype)

    result = RoIPoolBenchmark(
        device=str(device),
        device_name=_device_name(device),
        dtype=str(dtype).replace("torch.", ""),
        feature_shape=tuple(feature_shape),
        num_rois=num_rois,
        output_size=(ph, pw),
        spatial_scale=spatial_scale,
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
    )

    candidates: dict[str, Callable[[Tensor], tuple[Tensor, Tensor | None]]] = {}
    for name in implementations:
        if name == "fastrcnn":
            if not _extension.native_available(device.type):
                result.skipped[name] = "the native operator could not be built or loaded"
                continue
            candidates[name] = lambda x: torch.ops.fastrcnn.roi_pool(x, rois, spatial_scale, ph, pw)
        elif name == "fastrcnn-no-argmax":
            if not _extension.native_available(device.type):
                result.skipped[name] = "the native operator could not be built or loaded"
                continue
            candidates[name] = lambda x: (torch.ops.fastrcnn.roi_pool_inference(x, rois, spatial_scale, ph, pw), None)
        elif name == "torchvision":
            try:
                import torchvision  # noqa: F401

                torch.ops.torchvision.roi_pool  # noqa: B018
            except (ImportError, AttributeError, RuntimeError) as exc:
                result.skipped[name] = f"torchvision is not available ({exc})"
                continue
            try:  # torchvision's CUDA kernel has no bfloat16
                torch.ops.torchvision.roi_pool(features, rois[:1], spatial_scale, ph, pw)
            except (RuntimeError, NotImplementedError) as exc:
                result.skipped[name] = f"torchvision has no roi_pool for {dtype} on {device.type} ({exc})"
                continue
            candidates[name] = lambda x: torch.ops.torchvision.roi_pool(x, rois, spatial_scale, ph, pw)
        elif name == "reference":
            candidates[name] = lambda x: roi_pool_reference(x, rois, (ph, pw), spatial_scale)
        else:
            raise ValueError(f"unknown implementation {name!r}; choose from {IMPLEMENTATIONS}")

    if "fastrcnn" in candidates and "torchvision" in candidates:
        with torch.no_grad():
            ours, ours_arg = candidates["fastrcnn"](features)
            theirs, theirs_arg = candidates["torchvision"](features)
        result.matches_torchvision = bool(torch.equal(ours, theirs) and torch.equal(ours_arg, theirs_arg))
        del ours, ours_arg, theirs, theirs_arg
    if "fastrcnn" in candidates and "fastrcnn-no-argmax" in candidates:
        with torch.no_grad():
            ours, _ = candidates["fastrcnn"](features)
            lean, _ = candidates["fastrcnn-no-argmax"](features)
        # bit for bit (NaN-free random input): the same compare/select without the index
        result.no_argmax_identical = bool(
            torch.equal(ours.contiguous().view(torch.uint8), lean.contiguous().view(torch.uint8))
        )
        del ours, lean

    def forward(fn):
        def run():
            with torch.no_grad():
                fn(features)

        return run

    def forward_backward(fn):
        def run():
            x = features.detach().requires_grad_(True)
            out, _ = fn(x)
            (grad,) = torch.autograd.grad(out, x, grad_output)
            return grad

        return run

    for phase, make in (("forward", forward), ("forward_backward", forward_backward)):
        fns = {name: make(fn) for name, fn in candidates.items() if phase == "forward" or name != "fastrcnn-no-argmax"}
        times: dict[str, list[float]] = {name: [] for name in fns}
        for name, fn in fns.items():
            for _ in range(0 if name == "reference" else warmup):
                _time_once(fn, device)
        for i in range(runs):
            for name, fn in fns.items():  # interleaved: a busy machine slows every implementation alike
                if name == "reference" and i >= reference_runs:
                    continue
                times[name].append(_time_once(fn, device))
        for name, seconds in times.items():
            result.timings.setdefault(name, {})[phase] = TimingStats.from_samples(seconds)
    return result


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU ({torch.get_num_threads()} threads)"


def print_benchmark(result: RoIPoolBenchmark) -> None:
    """A table of the timings on stderr (rich)."""
    from rich.table import Table

    from fastrcnn_cli.console import err

    n, c, h, w = result.feature_shape
    title = (
        f"RoI max pooling, {result.device_name}, {result.dtype}: {n} x {c} x {h} x {w} features, "
        f"{result.num_rois} RoIs, {result.output_size[0]} x {result.output_size[1]}, "
        f"scale {result.spatial_scale:g}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("implementation")
    for phase in PHASES:
        label = phase.replace("_", " + ")
        table.add_column(f"{label} median ms", justify="right")
        table.add_column("min - max", justify="right")
        table.add_column("vs torchvision", justify="right")
    for name, phases in result.timings.items():
        row = [name]
        for phase in PHASES:
            t = phases.get(phase)
            if t is None:
                row += ["-", "-", "-"]
                continue
            ratio = result.speedup(phase, impl=name)
            row += [f"{t.median_ms:.1f}", f"{1000 * t.min:.1f} - {1000 * t.max:.1f}", f"{ratio:.1f}x" if ratio else "-"]
        table.add_row(*row)
    err.print(table)
    for name, why in result.skipped.items():
        progress.warn(f"{name} not timed: {why}")
    if result.matches_torchvision is not None:
        verdict = "identical to" if result.matches_torchvision else "DIFFERENT from"
        progress.info(f"fastrcnn's forward output and argmax are {verdict} torchvision's.")
    if result.no_argmax_identical is not None:
        verdict = "bit-identical to" if result.no_argmax_identical else "DIFFERENT from"
        ratio = result.speedup("forward", baseline="fastrcnn", impl="fastrcnn-no-argmax")
        progress.info(f"fastrcnn's forward without argmax (inference) is {verdict} the one with argmax"
                     + (f", {ratio:.2f}x as fast." if ratio else "."))


def main(argv: Sequence[str] | None = None) -> RoIPoolBenchmark:
    parser = argparse.ArgumentParser(description="Time RoI max pooling implementations.")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rois", type=int, default=2000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) pure-PyTorch reference")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    impls = [i for i in IMPLEMENTATIONS if not (args.no_reference and i == "reference")]
    result = benchmark_roi_pool(
        device=args.device,
        num_rois=args.rois,
        runs=args.runs,
        warmup=args.warmup,
        dtype=getattr(torch, args.dtype),
        implementations=impls,
    )
    print_benchmark(result)
    return result


if __name__ == "__main__":
    main()
