"""Detect objects with a `fastrcnn export` ONNX file: onnxruntime + NumPy + OpenCV, no fastrcnn, no PyTorch.
Usage: python onnx_detect.py model.onnx image.jpg   (prints class, score, x1 y1 x2 y2 in image pixels)"""
import json, sys
import cv2, numpy as np, onnxruntime as ort

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map  # the file describes itself
classes, scale, max_size = json.loads(meta["classes"]), json.loads(meta["scales"])[0], int(meta["max_size"])
ss_cfg = json.loads(meta["proposals"])  # the Selective Search settings the model was trained with
image = cv2.imread(sys.argv[2])
h, w = image.shape[:2]
f = min(1.0, ss_cfg["max_side"] / max(h, w))  # Selective Search on a copy at most max_side pixels long
ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
ss.setBaseImage(cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA))
ss.switchToSelectiveSearchFast() if ss_cfg["mode"] == "fast" else ss.switchToSelectiveSearchQuality()
x, y, bw, bh = ss.process()[: ss_cfg["top"]].T.astype(np.float32) / f
big = (bw >= ss_cfg["min_size"]) & (bh >= ss_cfg["min_size"])  # fastrcnn drops boxes under min_size pixels
rois = np.stack([x, y, np.minimum(x + bw, w) - 1, np.minimum(y + bh, h) - 1], axis=1)[big]  # x1 y1 x2 y2
factor = scale / min(h, w) if round(scale / min(h, w) * max(h, w)) <= max_size else max_size / max(h, w)
resized = cv2.resize(image, (round(w * factor), round(h * factor)))  # the network input: shorter side = scale
scores, boxes = session.run(None, {"image": resized, "rois": rois, "im_info": np.array([h, w, factor], np.float32)})
nms = json.loads(meta["fastrcnn.checkpoint"]).get("postprocess", {}).get("nms", 0.3)  # the model's NMS IoU
for k, name in enumerate(classes, start=1):  # per class: score threshold 0.5, NMS at the model's IoU
    b = boxes[:, 4 * k : 4 * k + 4]
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2] + 1], axis=1).tolist()
    for i in cv2.dnn.NMSBoxes(xywh, scores[:, k].tolist(), 0.5, nms):
        print(f"{name} {scores[i, k]:.3f} " + " ".join(f"{v:.1f}" for v in b[i]))
