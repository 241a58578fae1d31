"""ONNX Runtime against PyTorch on the shipped model and the example images, with the same proposals.

    python scripts/onnx_vs_pytorch.py model.onnx [RUNS] [THREADS]

model.onnx: `fastrcnn export weights/shapes-efficientnet-lite0.pt model.onnx`. Prints, per image, the largest
score and box differences and whether the detections after NMS are identical (at 0.5 and at the evaluation
floor 0.001), against the PyTorch path as `detect` runs it and without its RoI de-duplication; then the network
time per image of each (median of RUNS after one warm-up, interleaved; THREADS for torch and ONNX Runtime).
"""
import dataclasses, statistics, sys
from pathlib import Path

import numpy as np
import torch

from fastrcnn_cli.model.checkpoint import load_checkpoint
from fastrcnn_cli.detect import DetectSettings, Detector, StageTimes, proposal_settings_from_meta, sanitise_proposals
from fastrcnn_cli.onnx_backend import load_onnx
from fastrcnn_cli.io import read_image
onnx_path, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
if len(sys.argv) > 3: torch.set_num_threads(int(sys.argv[3]))
model, meta = load_checkpoint(None)
s = DetectSettings.for_checkpoint(meta)
ps = proposal_settings_from_meta(meta)
pt = Detector(model, s, "cpu", ps)
pt_nodedup = Detector(model, dataclasses.replace(s, dedup=False), "cpu", ps)
net, _ = load_onnx(onnx_path)
ox = Detector(net, s, "cpu", ps)
print("torch threads", torch.get_num_threads())
for f in sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "examples").glob("shapes-*.jpg")):
    img = read_image(f); props = sanitise_proposals(pt.propose(img), img.shape[1], img.shape[0])
    res = {}
    for name, d in (("pytorch", pt), ("pytorch-nodedup", pt_nodedup), ("onnxruntime", ox)):
        p, b = d.scores_and_boxes(img, props, StageTimes())
        res[name] = (p, b, d.postprocess(f, p, b, 0.5), d.postprocess(f, p, b, 0.001))
    for ref in ("pytorch", "pytorch-nodedup"):
        p0, b0, d0, e0 = res[ref]; p1, b1, d1, e1 = res["onnxruntime"]
        same = lambda a, c: len(a) == len(c) and (a.labels == c.labels).all() and np.abs(a.boxes - c.boxes).max(initial=0) < 1e-2 and np.abs(a.scores - c.scores).max(initial=0) < 1e-4
        print(f"{f} P={len(props)} ORT vs {ref}: scores max|d| {float((p1-p0).abs().max()):.2e}, boxes max|d| {float((b1-b0).abs().max()):.2e} px; "
              f"dets@0.5 {len(d0)}/{len(d1)} identical={same(d0,d1)}; dets@0.001 {len(e0)}/{len(e1)} identical={same(e0,e1)}"
              + (f" max box diff {np.abs(d0.boxes-d1.boxes).max():.2f}" if len(d0)==len(d1) else ""))
    t = {"pytorch": [], "onnxruntime": []}
    for i in range(runs + 1):
        for name, d in (("pytorch", pt), ("onnxruntime", ox)):
            st = StageTimes(); d.scores_and_boxes(img, props, st)
            if i: t[name].append(st.network)
    print(f"{f} network per image, median of {runs} (min-max): " + "; ".join(
        f"{k} {1000*statistics.median(v):.1f} ms ({1000*min(v):.1f}-{1000*max(v):.1f})" for k, v in t.items()))
