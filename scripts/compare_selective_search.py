"""OpenCV's Selective Search against ours (``--proposer native``), side by side on a VOC-format data set.

For every image (resized as the proposers see it: longer side ``--max-side``, INTER_AREA):

* **Agreement** of single groupings: for each ``--configs`` entry (colour space, k, strategy), OpenCV's
  ``process()`` restricted to that one grouping and ours; counts images whose box sets are equal, and the mean
  Jaccard index of the sets where they are not.
* **Whole modes** (``--modes``) of both proposers through the project's pipeline (boxes mapped back to the
  original pixels, min size, duplicates, top N): recall at IoU 0.5 and 0.7 and MABO against the ground truth
  (difficult boxes excluded, :func:`fastrcnn_cli.proposals.recall.proposal_recall`), boxes per image, and the
  search's CPU time per image (process CPU time: both proposers' threads included).
* **Latency** of one image with the native proposer on 1 thread and on all threads (wall clock).

Each proposer runs in this one process, one after the other on each image, so they share the machine's load.

    python scripts/compare_selective_search.py ../shared/datasets/raccoon --splits trainval,test
    python scripts/compare_selective_search.py ../shared/datasets/raccoon --splits test --modes fast,quality \
        --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastrcnn_cli.data.voc import load_dataset  # noqa: E402
from fastrcnn_cli.proposals import native  # noqa: E402
from fastrcnn_cli.proposals.recall import proposal_recall  # noqa: E402
from fastrcnn_cli.proposals.selective_search import (  # noqa: E402
    ProposalSettings,
    _rects,
    finish_boxes,
    opencv_single_config_rects,
    read_image_for_proposals,
    rects_to_boxes,
    scaled_size,
)


@dataclass
class Run:
    """One (proposer, mode) over the images."""

    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


def parse_config(text: str) -> tuple[str, int, int]:
    space, k, strategy = text.split(":")
    return space, int(k), int(strategy)


def resized(path: Path, max_side: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    import cv2

    image, (w, h) = read_image_for_proposals(path, max_side)
    ws, hs = scaled_size(w, h, max_side)
    if (image.shape[1], image.shape[0]) != (ws, hs):
        image = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
    return image, (ws, hs), (w, h)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default="../shared/datasets/raccoon")
    parser.add_argument("--splits", default="trainval,test")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    parser.add_argument("--modes", default="fast", help="comma-separated: fast, quality")
    parser.add_argument("--max-side", type=int, default=500)
    parser.add_argument("--configs", default="hsv:150:0,lab:300:1", help="single groupings: space:k:strategy,...")
    parser.add_argument("--latency-images", type=int, default=10, help="images timed with 1 and all threads")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import cv2
    import torch

    records, classes = [], None
    for split in args.splits.split(","):
        dataset = load_dataset(args.data, split, warn=False)
        classes = dataset.classes
        seen = {r.id for r in records}
        records.extend(r for r in dataset.records if r.id not in seen)
    if args.limit:
        records = records[: args.limit]
    modes = [m for m in args.modes.split(",") if m]
    configs = [parse_config(c) for c in args.configs.split(",") if c]
    threads = torch.get_num_threads()
    runs = {(p, m): Run() for m in modes for p in ("opencv", "native")}
    agreement = {c: {"equal": 0, "jaccard": []} for c in configs}
    examples: dict[str, list] = {f"{c[0]}:{c[1]}:{c[2]}": [] for c in configs}
    latency: dict[int, list[float]] = {1: [], threads: []}

    for n, record in enumerate(records, 1):
        small, small_size, size = resized(record.image_path, args.max_side)
        for config in configs:
            space, k, strategy = config
            image = native.colour_space(small, space)
            theirs = {tuple(r) for r in opencv_single_config_rects(image, k, strategy, native.MIN_REGION).tolist()}
            ours = {tuple(r) for r in native.search_spaces([image], (k,), (strategy,)).tolist()}
            if theirs == ours:
                agreement[config]["equal"] += 1
            else:
                agreement[config]["jaccard"].append(jaccard(theirs, ours))
                examples[f"{space}:{k}:{strategy}"].append(
                    {"image": record.id, "opencv": len(theirs), "native": len(ours), "common": len(theirs & ours)}
                )
        for (proposer, mode), run in runs.items():
            settings = ProposalSettings(mode=mode, max_side=args.max_side, proposer=proposer)
            c0, w0 = time.process_time(), time.perf_counter()
            rects = _rects(small, settings)
            run.cpu.append(time.process_time() - c0)
            run.wall.append(time.perf_counter() - w0)
            run.boxes[record.id] = finish_boxes(rects_to_boxes(rects, small_size, size), settings, *size)
        if n <= args.latency_images:
            for t in latency:
                torch.set_num_threads(t)
                cv2.setNumThreads(t)
                w0 = time.perf_counter()
                native.native_rects(small, "fast")
                latency[t].append(time.perf_counter() - w0)
            torch.set_num_threads(threads)
            cv2.setNumThreads(threads)
        print(f"{n}/{len(records)} {record.id}", file=sys.stderr, flush=True)

    result: dict = {"images": len(records), "max_side": args.max_side, "threads": threads, "modes": {}, "agreement": {}}
    print(f"{len(records)} images of {args.data} ({args.splits}), longer side {args.max_side}, {threads} threads")
    print(f"{'proposer':8} {'mode':8} {'boxes/img':>9} {'R@0.5':>7} {'R@0.7':>7} {'MABO':>7} {'CPU s/img':>10} "
          f"{'wall s/img':>10}")
    for (proposer, mode), run in runs.items():
        report = proposal_recall(records, run.boxes, classes)
        row = {
            "boxes_per_image": float(np.mean([len(b) for b in run.boxes.values()])),
            "recall_0.5": report.recall(0.5),
            "recall_0.7": report.recall(0.7),
            "mabo": report.mabo,
            "cpu_s_per_image": statistics.mean(run.cpu),
            "cpu_s_median": statistics.median(run.cpu),
            "wall_s_per_image": statistics.mean(run.wall),
        }
        result["modes"][f"{proposer}-{mode}"] = row
        print(f"{proposer:8} {mode:8} {row['boxes_per_image']:9.0f} {row['recall_0.5']:7.4f} {row['recall_0.7']:7.4f} "
              f"{row['mabo']:7.4f} {row['cpu_s_per_image']:10.3f} {row['wall_s_per_image']:10.3f}")
    for mode in modes:
        o, nat = result["modes"][f"opencv-{mode}"], result["modes"][f"native-{mode}"]
        print(f"{mode}: native / opencv CPU time {nat['cpu_s_per_image'] / o['cpu_s_per_image']:.3f}; "
              f"differences native - opencv: R@0.5 {nat['recall_0.5'] - o['recall_0.5']:+.4f}, "
              f"R@0.7 {nat['recall_0.7'] - o['recall_0.7']:+.4f}, MABO {nat['mabo'] - o['mabo']:+.4f}, "
              f"boxes/image {nat['boxes_per_image'] / o['boxes_per_image'] - 1:+.1%}")
    if "fast" in modes and "quality" in modes:
        q, f = result["modes"]["native-quality"], result["modes"]["opencv-fast"]
        print(f"native quality / opencv fast CPU time {q['cpu_s_per_image'] / f['cpu_s_per_image']:.3f}")
    for (space, k, strategy), a in agreement.items():
        key = f"{space}:{k}:{strategy}"
        mean_j = statistics.mean(a["jaccard"]) if a["jaccard"] else 1.0
        result["agreement"][key] = {"equal": a["equal"], "images": len(records), "mean_jaccard_when_different": mean_j,
                                    "different": examples[key][:10]}
        print(f"single grouping {key}: same box set on {a['equal']}/{len(records)} images"
              + (f"; where different, mean Jaccard {mean_j:.4f}" if a["jaccard"] else ""))
    if latency[1]:
        one, many = statistics.median(latency[1]), statistics.median(latency[threads])
        result["latency"] = {"threads_1_s": one, f"threads_{threads}_s": many, "ratio": many / one}
        print(f"native fast, one image: {one:.3f} s with 1 thread, {many:.3f} s with {threads} (x{many / one:.2f}), "
              f"median of {len(latency[1])} images")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
