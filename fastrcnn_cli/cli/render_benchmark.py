"""``fastrcnn benchmark``'s output: the Rich tables, the summary line, the "where the time went" plot and the CSV
of every number, all made from a :class:`~fastrcnn_cli.benchmark.BenchmarkResult`."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from rich import box
from rich.table import Table

from fastrcnn_cli.benchmark import (
    STAGES,
    BenchmarkResult,
    HeadResult,
    ProposersResult,
    RoIPoolResult,
    SharedResult,
    StagesResult,
)
from fastrcnn_cli.errors import InputError
from fastrcnn_cli.io import atomic_write_bytes, atomic_write_text
from fastrcnn_cli.timing import TimingStats

SECTION_TITLES = {
    "stages": "1. Where the time went: one detection, stage by stage",
    "proposals": "1b. Selective Search: OpenCV's against ours (native), fast and quality modes",
    "shared": "2. Share the features: R-CNN's way against Fast R-CNN's",
    "roipool": "3. RoI max pooling: our operator, torchvision's, the pure-PyTorch reference",
    "head": "4. The fully connected head: full against truncated SVD",
}
STAGE_LABELS = {
    "proposals": "Selective Search",
    "preprocess": "preprocessing",
    "backbone": "conv backbone",
    "head": "RoI pool + heads × {n}",
    "postprocess": "NMS, post-process",
}
#: the stage names when the network ran in ONNX Runtime: one session.run does backbone, RoI pooling and heads
ONNX_STAGE_LABELS = {
    "backbone": "ONNX Runtime: backbone + RoI pool + heads × {n}",
    "head": "(inside the ONNX graph)",
}
ROIPOOL_NAMES = {"fastrcnn": "ours (native)", "fastrcnn-no-argmax": "ours, no argmax (inference)",
                 "torchvision": "torchvision", "reference": "PyTorch reference"}


# ---------------------------------------------------------------------------------------------------------------
# numbers for people


def fmt_ms(ms: float) -> str:
    """A duration for people: 0.042 ms, 4.21 ms, 42.1 ms, 421 ms, 4.21 s, 42.1 s."""
    if not math.isfinite(ms):
        return "-"
    if ms >= 1000.0:
        s = ms / 1000.0
        return f"{s:.2f} s" if s < 10 else f"{s:.1f} s" if s < 100 else f"{s:.0f} s"
    if ms >= 100:
        return f"{ms:.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1:
        return f"{ms:.2f} ms"
    return f"{ms:.3f} ms"


def fmt_range(lo_ms: float, hi_ms: float) -> str:
    """``209–215 ms``, or ``980 ms–1.02 s`` when the ends need different units."""
    lo, hi = fmt_ms(lo_ms), fmt_ms(hi_ms)
    lo_value, _, lo_unit = lo.partition(" ")
    hi_value, _, hi_unit = hi.partition(" ")
    if lo_unit == hi_unit:
        return f"{lo_value}–{hi_value} {hi_unit}"
    return f"{lo}–{hi}"


def median(stats: TimingStats) -> str:
    return fmt_ms(stats.median_ms)


def spread(stats: TimingStats) -> str:
    return fmt_range(1000.0 * stats.min, 1000.0 * stats.max)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _runs_text(runs: int, warmup: int) -> str:
    return f"median of {_plural(runs, 'run')} after {warmup} warm-up"


# ---------------------------------------------------------------------------------------------------------------
# tables


def header_rows(result: BenchmarkResult) -> list[tuple[str, str]]:
    """What was timed, and where: (key, text) pairs."""
    env, setup = result.environment, result.setup
    img, props, config = setup.image, setup.proposals, setup.model.config
    cuda = "CPU-only torch"
    if env.cuda:
        cuda = f"CUDA {env.cuda}" + (f", cuDNN {env.cudnn}" if env.cudnn else "")
    backbone = config.backbone.to_dict()
    backbone_text = backbone["name"] + (f" ({backbone['cut']})" if backbone.get("cut") else "")
    head = config.head.to_dict()
    ranks = head.get("ranks") or [None, None]
    head_text = f"fc6/fc7 {head['hidden']}"
    if any(r is not None for r in ranks):
        head_text += f", SVD ranks {ranks[0]}/{ranks[1]}"
    runs_text = "; ".join(f"{s} {setup.runs[s]} after {setup.warmup[s]}" for s in setup.sections)
    proposals = (
        f"{props.selective_search} from Selective Search (top {props.requested}), "
        f"{props.unique_rois} unique after rounding to feature cells"
    )
    if props.added_jittered:
        proposals += (
            f"; shared/roipool/head use {props.sections_use}: {props.added_jittered} jittered copies added "
            f"to reach {props.requested}"
        )
    roi_pool = ("native operator" if setup.roi_pool_native else "ONNX MaxRoiPool, in the graph" if setup.onnx
                else "pure-PyTorch fallback (the native operator is not available)")
    return [
        ("device", f"{env.device}: {env.device_name}"),
        ("threads", f"torch {env.torch_threads} (inter-op {env.torch_interop_threads}), OpenCV "
                    f"{env.opencv_threads}; {env.cpu_count} CPU cores ({env.cpu})"),
        ("software", f"torch {env.torch} ({cuda}), torchvision {env.torchvision}, OpenCV {env.opencv}, "
                     f"python {env.python}, fastrcnn {env.fastrcnn}"),
        ("model", f"{setup.weights}: {backbone_text}, {head_text}, {len(config.classes)} classes; feature map "
                  f"{'x'.join(str(v) for v in setup.model.feature_map)} (stride {setup.model.stride})"),
        ("image", f"{img.path}: {img.width} x {img.height}, network input {img.input_width} x "
                  f"{img.input_height} (scale {img.scale}, max size {img.max_size})"),
        ("proposals", proposals),
        ("RoI pooling", roi_pool),
        ("runtime", setup.runtime),
        ("runs", f"timed runs after warm-up runs: {runs_text}; medians, spread min–max"),
        ("date", env.date),
    ]


def _table(title: str, caption: str, columns: Sequence[tuple[str, str]] = ()) -> Table:
    table = Table(title=f"[bold]{title}[/bold]", title_justify="left", caption=caption, caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for name, justify in columns:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    return table


def stages_table(data: StagesResult) -> Table:
    total = data.total.median_ms
    table = _table(
        SECTION_TITLES["stages"],
        "Detector.detect() on the image: the call and clocks of `fastrcnn detect` "
        f"({_runs_text(data.runs, data.warmup)}; {data.num_proposals} proposals, {data.num_detections} "
        "detections). cold: the first run of the process, as a one-image `fastrcnn detect` measures it.",
        (("stage", "left"), ("median", "right"), ("min–max", "right"), ("share", "right"), ("cold", "right")),
    )
    labels = {**STAGE_LABELS, **(ONNX_STAGE_LABELS if data.runtime == "ONNX Runtime" else {})}
    for name in STAGES:
        s = data.stages[name]
        share = s.median_ms / total if total > 0 else float("nan")
        table.add_row(labels[name].format(n=data.num_proposals), median(s), spread(s), f"{100 * share:.0f} %",
                      fmt_ms(1000.0 * data.cold[name]))
    table.add_section()
    net = data.network
    net_share = f"{100 * net.median_ms / total:.0f} %" if total > 0 else ""
    table.add_row("network (detect's)", median(net), spread(net), net_share, fmt_ms(1000.0 * data.cold["network"]))
    table.add_row("[bold]total[/bold]", f"[bold]{fmt_ms(total)}[/bold]", spread(data.total), "100 %",
                  fmt_ms(1000.0 * data.cold["total"]))
    return table


def proposals_table(data: ProposersResult) -> Table:
    n = data.threads
    table = _table(
        SECTION_TITLES["proposals"],
        f"the image at longer side {data.max_side}, top {data.top} boxes; {_runs_text(data.runs, data.warmup)}. "
        f"CPU: process CPU time of one image on 1 thread; latency: wall clock with 1 and {n} threads (torch's and "
        "OpenCV's).",
        (("proposer", "left"), ("mode", "left"), ("boxes", "right"), ("CPU / image", "right"),
         ("x OpenCV fast", "right"), ("latency, 1 thread", "right"), (f"latency, {n} threads", "right"),
         (f"{n} / 1 threads", "right")),
    )
    for i, row in enumerate(data.rows.values()):
        if i and i % 2 == 0:
            table.add_section()
        table.add_row(row.proposer, row.mode, str(row.boxes), median(row.cpu_1_thread),
                      f"{row.cpu_vs_opencv_fast:.3f}", median(row.latency_1_thread), median(row.latency_all_threads),
                      f"{row.latency_all_vs_1_thread:.2f}")
    return table


def shared_table(data: SharedResult) -> Table:
    fast, rcnn = data.fast_rcnn, data.rcnn
    n = data.num_proposals
    table = _table(
        SECTION_TITLES["shared"],
        f"Per image, {n} proposals, {_runs_text(data.runs, data.warmup)}. The R-CNN side is measured on "
        f"{rcnn.sampled} of the {n} proposals and scaled x{rcnn.scale_factor:.4g}. How: {data.method}",
        (("per image", "left"), ("R-CNN: CNN per proposal", "right"), ("Fast R-CNN: shared", "right")),
    )
    for label, step in (("input: crop+warp / resize", "prepare"), ("conv backbone", "backbone"),
                        ("RoI pool + fc head", "head")):
        table.add_row(label, median(getattr(rcnn.times, step)), median(getattr(fast, step)))
    table.add_section()
    table.add_row("[bold]total[/bold]", f"[bold]{median(rcnn.times.total)}[/bold]",
                  f"[bold]{median(fast.total)}[/bold]")
    table.add_row("min–max", spread(rcnn.times.total), spread(fast.total))
    table.add_row("per proposal", median(rcnn.per_crop), fmt_ms(fast.total.median_ms / n))
    table.add_section()
    spr = data.speedup_per_round
    table.add_row("[bold]speedup[/bold]", "", f"[bold]{data.speedup:.0f}x[/bold]")
    table.add_row("per round, min–max", "", f"{spr.min:.0f}–{spr.max:.0f}x")
    return table


def roipool_table(data: RoIPoolResult) -> Table:
    t = data.timings
    n, c, h, w = t.feature_shape
    match = t.matches_torchvision
    match_text = "" if match is None else (" Our forward output and argmax are identical to torchvision's." if match
                                           else " [red]Our forward output DIFFERS from torchvision's.[/red]")
    table = _table(
        SECTION_TITLES["roipool"],
        f"{data.case_description}: random {n}x{c}x{h}x{w} {t.dtype}, {t.num_rois} Selective-Search-like RoIs, "
        f"{t.output_size[0]}x{t.output_size[1]} bins, scale {t.spatial_scale:g}; "
        f"{_runs_text(data.runs, data.warmup)} (the slow reference: {_plural(data.reference_runs, 'run')} after "
        f"{data.reference_warmup}). fwd+bwd: forward and the gradient of the features. x: time / ours." + match_text,
        (("implementation", "left"), ("pass", "left"), ("median", "right"), ("min–max", "right"),
         ("x ours", "right")),
    )
    ours = t.timings.get("fastrcnn", {})
    for i, (impl, phases) in enumerate(t.timings.items()):
        if i:
            table.add_section()
        for j, phase in enumerate(("forward", "forward_backward")):
            stats = phases.get(phase)
            if stats is None:
                continue
            base = ours.get(phase)
            ratio = stats.median / base.median if base and base.median > 0 else None
            table.add_row(ROIPOOL_NAMES.get(impl, impl) if j == 0 else "",
                          "forward" if phase == "forward" else "fwd+bwd", median(stats), spread(stats),
                          f"{ratio:.3g}" if ratio is not None else "-")
    for impl, why in t.skipped.items():
        table.add_row(ROIPOOL_NAMES.get(impl, impl), "not timed", why)
    return table


def head_table(data: HeadResult) -> Table:
    table = _table(
        SECTION_TITLES["head"],
        f"fc6 + ReLU + fc7 + ReLU on {data.vgg16.context.get('num_rois')} RoIs at once, random weights of these "
        "shapes (a dense product's time does not depend on the values), full and SVD alternating, "
        f"{_runs_text(data.runs, data.warmup)}. Paper (VGG16, K40 GPU): fc6 122 -> 37 ms, fc7 20 -> 4 ms."
        + ("" if data.model else " --rank R (--rank-fc7 R7) times this model's own head too."),
        (("head", "left"), ("layer", "left"), ("rank", "right"), ("full", "right"), ("SVD", "right"),
         ("speedup", "right")),
    )
    for label, d in (("VGG16 (paper)", data.vgg16), ("this model", data.model)):
        if d is None:
            continue
        if d is data.model:
            table.add_section()
        shape = d.shape
        layers = {"fc6": f"{shape.in_features}→{shape.hidden}", "fc7": f"{shape.hidden}→{shape.hidden}"}
        for i, layer in enumerate(("fc6", "fc7")):
            b, a = getattr(d.before, layer), getattr(d.after, layer)
            table.add_row(label if i == 0 else "", f"{layer} {layers[layer]}", str(shape.ranks[i] or "-"),
                          median(b), median(a), f"{b.median / a.median:.2f}x" if a.median > 0 else "-")
        b, a = d.before.total, d.after.total
        table.add_row("", "[bold]fc6 + fc7[/bold]", "", f"[bold]{median(b)}[/bold]", f"[bold]{median(a)}[/bold]",
                      f"[bold]{d.speedup:.2f}x[/bold]")
        table.add_row("", "min–max", "", spread(b), spread(a), "")
        table.add_row("", "parameters", "", f"{d.params_before / 1e6:.1f} M", f"{d.params_after / 1e6:.1f} M",
                      f"{d.params_before / d.params_after:.1f}x fewer")
    return table


_TABLES = {"stages": stages_table, "proposals": proposals_table, "shared": shared_table, "roipool": roipool_table,
           "head": head_table}


def render_report(result: BenchmarkResult) -> list[Any]:
    """Rich renderables: the header, then one table per section run, then the total time."""
    header = Table.grid(padding=(0, 1))
    header.add_column(style="bold", no_wrap=True)
    header.add_column()
    for key, text in header_rows(result):
        header.add_row(key, text)
    out: list[Any] = ["[bold]fastrcnn benchmark[/bold]", header, ""]
    for name in result.sections.names():
        out += [_TABLES[name](getattr(result.sections, name)), ""]
    out.append(f"benchmark took {result.elapsed_s:.0f} s")
    return out


def summary_line(result: BenchmarkResult) -> str:
    """One line with the headline numbers."""
    parts = []
    s = result.sections
    if s.stages:
        parts.append(f"detection {median(s.stages.total)} (network {median(s.stages.network)})")
    if s.proposals:
        native = s.proposals.rows["native-fast"].cpu_vs_opencv_fast
        parts.append(f"native Selective Search {1 / native:.1f}x less CPU than OpenCV's (fast)")
    if s.shared:
        parts.append(f"sharing the features {s.shared.speedup:.0f}x faster than R-CNN's way")
    if s.roipool:
        tv = s.roipool.timings.speedup("forward")
        if tv:
            parts.append(f"our RoI pooling {tv:.1f}x faster than torchvision's (forward)")
    if s.head:
        parts.append(f"SVD head {s.head.vgg16.speedup:.2f}x faster (VGG16)")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# the plot


def _tick_label(ms: float) -> str:
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def _sqrt_ticks(top: float) -> list[float]:
    """Round tick values up to ``top`` that are not crowded on a square-root axis."""
    candidates = [v * 10**e for e in range(-1, 7) for v in (1, 2, 5)]
    ticks: list[float] = [0.0]
    for v in candidates:
        if v > top:
            break
        if math.sqrt(v) - math.sqrt(ticks[-1]) >= 0.11 * math.sqrt(top):
            ticks.append(v)
    return ticks


def plot_stages(result: BenchmarkResult, path: str | os.PathLike) -> None:
    """Write the "where the time went" PNG: one horizontal bar per stage (median, min–max whisker), square-root
    scaled x axis, each bar labelled with its time; with the ``shared`` section, a second panel with R-CNN's and
    Fast R-CNN's per-image times on the same kind of axis. Written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stages, shared = result.sections.stages, result.sections.shared
    if stages is None:
        raise InputError("the plot shows the stages section; include 'stages' in the sections")
    setup, env = result.setup, result.environment
    n = stages.num_proposals
    rows = 2 if shared else 1
    fig = Figure(figsize=(8.0, 3.3 + (2.0 if shared else 0.0)), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False, gridspec_kw={"height_ratios": [5, 2.4][:rows]})[:, 0]

    def bars(ax: Any, labels: list[str], stats: list[TimingStats], colors: list[str]) -> None:
        medians = np.array([max(s.median_ms, 1e-6) for s in stats])
        lows = np.array([1000.0 * s.min for s in stats])
        highs = np.array([1000.0 * s.max for s in stats])
        y = np.arange(len(labels))[::-1]
        ax.barh(y, medians, color=colors, height=0.6)
        ax.errorbar(medians, y, xerr=[np.maximum(medians - lows, 0), np.maximum(highs - medians, 0)], fmt="none",
                    ecolor="0.3", lw=0.8, capsize=2)
        ax.set_yticks(y, labels, fontsize=9)
        ax.set_xscale("function", functions=(lambda v: np.sqrt(np.clip(v, 0, None)), np.square))
        top = float(max(highs.max(), medians.max())) * 1.5
        ax.set_xlim(0, top)
        ticks = _sqrt_ticks(top)
        ax.set_xticks(ticks, ["0"] + [_tick_label(t) for t in ticks[1:]], fontsize=7)
        ax.set_xlabel("time per image (square-root scale)", fontsize=8)
        for yi, m, hi in zip(y, medians, highs):
            ax.annotate(fmt_ms(float(m)), xy=(max(float(m), float(hi)), yi), xytext=(5, 0), textcoords="offset points",
                        va="center", fontsize=9)
        ax.spines[["top", "right"]].set_visible(False)

    names = {**STAGE_LABELS, **(ONNX_STAGE_LABELS if stages.runtime == "ONNX Runtime" else {})}
    labels = [names[s].format(n=n) for s in STAGES]
    colors = ["#c0504d", "#9bbb59", "#4f81bd", "#f79646", "#8064a2"]
    bars(axes[0], labels, [stages.stages[s] for s in STAGES], colors)
    axes[0].set_title(
        f"Where the time went: {setup.model.config.backbone.name}, {env.device_name} ({env.torch_threads} threads)\n"
        f"{setup.image.input_width} x {setup.image.input_height} input, {n} proposals, "
        f"{_runs_text(stages.runs, stages.warmup)}; total {median(stages.total)}",
        fontsize=9,
    )
    if shared:
        bars(
            axes[1],
            [f"R-CNN: {shared.num_proposals} CNN passes", "Fast R-CNN: 1 CNN pass"],
            [shared.rcnn.times.total, shared.fast_rcnn.total],
            ["#7f7f7f", "#4f81bd"],
        )
        axes[1].set_title(
            f"Share the features: {shared.speedup:.0f}x faster than one CNN pass per proposal\n"
            f"(R-CNN timed on {shared.rcnn.sampled} crops, scaled to {shared.num_proposals}; "
            "proposals and NMS excluded from both)",
            fontsize=9,
        )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# the CSV


def csv_rows(document: Mapping[str, Any]) -> Iterator[tuple[str, str, str, Any, str]]:
    """Every number of a benchmark's JSON document (:meth:`BenchmarkResult.to_dict`) as ``(section, item,
    statistic, value, unit)``: the environment and setup first, then each section's timings, one row per
    statistic (``median``, ``min``, ``max``, ``p25``, ..., ``n``) and one per run (``run_1``, ``run_2``, ...).
    ``item`` is the dotted path of the timing in the JSON document."""

    def unit(path: Sequence[str]) -> str:
        if any(p.endswith("_ms") for p in path):
            return "ms"
        if path and path[-1].endswith("_s"):
            return "s"
        if any("speedup" in p for p in path):
            return "x"
        return ""

    def walk(section: str, path: list[str], node: Any) -> Iterator[tuple[str, str, str, Any, str]]:
        if isinstance(node, Mapping):
            if "median_ms" in node and "min_ms" in node:  # a timing: its statistics and its runs
                item = ".".join(path)
                for key, value in node.items():
                    if key == "runs_ms":
                        for i, v in enumerate(value, start=1):
                            yield section, item, f"run_{i}", v, "ms"
                    elif key.endswith("_ms"):
                        yield section, item, key[: -len("_ms")], value, "ms"
                    elif key == "n":
                        yield section, item, "n", value, ""
                return
            for key, value in node.items():
                yield from walk(section, [*path, str(key)], value)
            return
        item, stat = ".".join(path[:-1]), (path[-1] if path else "")
        if isinstance(node, (list, tuple)):
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in node):
                for i, v in enumerate(node, start=1):
                    yield section, item, f"{stat}_{i}", v, unit(path)
            else:
                yield section, item, stat, " ".join(str(v) for v in node), ""
        else:
            numeric = isinstance(node, (int, float)) and not isinstance(node, bool)
            yield section, item, stat, node, unit(path) if numeric else ""

    yield from walk("environment", [], document["environment"])
    yield from walk("setup", [], document["setup"])
    for name, data in document["sections"].items():
        yield from walk(name, [], data)
    yield "all", "", "elapsed_s", document.get("elapsed_s"), "s"


def write_csv(result: BenchmarkResult, path: str | os.PathLike) -> None:
    """Every number of ``result`` as CSV rows (header ``section,item,statistic,value,unit``), written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("section", "item", "statistic", "value", "unit"))
    for section, item, stat, value, unit in csv_rows(result.to_dict()):
        if isinstance(value, float):
            value = repr(value)
        elif value is None:
            value = ""
        writer.writerow((section, item, stat, value, unit))
    atomic_write_text(path, buf.getvalue())
