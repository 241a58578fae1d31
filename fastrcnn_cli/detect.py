"""Detection with a trained model: the paper's test-time procedure, timed stage by stage.

For one image:

1. proposals: Selective Search (or given boxes), in original image pixels;
2. preprocessing: resize so the shorter side is ``scale`` (600) with the longer side at most ``max_size``
   (1000), normalise;
3. backbone: one convolutional pass over the whole image;
4. head: RoI pooling of every proposal out of the shared feature map, fc6, fc7, softmax and class-specific
   box regression. Proposals that round to the same feature cells (stride 16) are pooled once
   (``dedup``, the original's ``DEDUP_BOXES``);
5. post-processing: decode the offsets, clip to the image, per class drop scores under ``score_threshold``,
   NMS at ``nms`` IoU (torchvision's batched NMS, with the +1-pixel areas of :mod:`fastrcnn_cli.boxes`),
   keep the ``max_detections`` best over all classes.

Multi-scale testing (several ``scales``): the image is processed at each scale, and each proposal is pooled
from the scale at which its area is closest to 224 x 224 pixels, as in the original's image pyramid.

Each stage's time is recorded in :class:`StageTimes` (synchronised on CUDA), so the numbers ``detect``
prints and the ones ``benchmark`` reports are the same measurements.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fastrcnn_cli import box_coding
from fastrcnn_cli.boxes import clip
from fastrcnn_cli.devices import synchronize
from fastrcnn_cli.evaluation import Detections
from fastrcnn_cli.model.fast_rcnn import FastRCNN, batch_images, prepare_image
from fastrcnn_cli.sampling import unique_rois


@dataclass(frozen=True)
class DetectSettings:
    scales: tuple[int, ...] = (600,)
    max_size: int = 1000
    score_threshold: float = 0.5  #: the CLI's --conf; evaluation uses EVAL_SETTINGS' floor
    nms: float = 0.3
    max_detections: int = 100  #: over all classes, per image
    classes: tuple[str, ...] | None = None  #: keep only these class names (None: all)
    dedup: bool = True


#: what evaluation uses: no real score floor, 100 detections per image (py-faster-rcnn's test protocol)
EVAL_SCORE_THRESHOLD = 0.001


@dataclass
class StageTimes:
    """Seconds spent in each stage of one detection."""

    proposals: float = 0.0
    preprocess: float = 0.0
    backbone: float = 0.0
    head: float = 0.0
    postprocess: float = 0.0

    @property
    def network(self) -> float:
        return self.preprocess + self.backbone + self.head

    @property
    def total(self) -> float:
        return self.proposals + self.preprocess + self.backbone + self.head + self.postprocess

    def to_dict(self) -> dict[str, float]:
        return {
            "proposals": self.proposals,
            "preprocess": self.preprocess,
            "backbone": self.backbone,
            "head": self.head,
            "postprocess": self.postprocess,
            "total": self.total,
        }


@dataclass
class DetectionResult:
    detections: Detections
    times: StageTimes = field(default_factory=StageTimes)
    num_proposals: int = 0
    image_size: tuple[int, int] = (0, 0)  #: (width, height)


def _map_to_scales(boxes: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """For each box, the index of the scale at which its area is closest to 224^2 (the original's pyramid rule)."""
    if len(factors) == 1:
        return np.zeros(len(boxes), np.int64)
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    areas = w[:, None] * h[:, None] * (np.asarray(factors)[None, :] ** 2)
    return np.abs(areas - 224 * 224).argmin(axis=1)


class Detector:
    """A model plus test settings; :meth:`detect` runs the whole procedure on one image."""

    def __init__(
        self,
        model: FastRCNN,
        settings: DetectSettings | None = None,
        device: torch.device | str = "cpu",
        proposal_settings: object | None = None,
        normalised_deltas: bool = False,
    ) -> None:
        """``normalised_deltas``: the model's regressor still predicts normalised offsets (a model in training,
        before :func:`fastrcnn_cli.box_coding.fold_normalisation`); saved models never do."""
        self.model = model.eval().to(device)
        self.normalised_deltas = normalised_deltas
        self.settings = settings or DetectSettings()
        self.device = torch.device(device)
        self.proposal_settings = proposal_settings
        classes = model.config.classes
        if self.settings.classes is not None:
            unknown = [c for c in self.settings.classes if c not in classes]
            if unknown:
                from fastrcnn_cli.errors import InputError

                raise InputError(
                    f"--classes names {', '.join(unknown)}, which the model does not know (it knows: {', '.join(classes)})"
                )
            self._class_mask = torch.tensor([c in self.settings.classes for c in classes])
        else:
            self._class_mask = torch.ones(len(classes), dtype=torch.bool)

    def _time(self, start: float) -> float:
        synchronize(self.device)
        return time.perf_counter() - start

    def propose(self, image: np.ndarray) -> np.ndarray:
        from fastrcnn_cli.proposals import ProposalSettings, selective_search

        settings = self.proposal_settings or ProposalSettings()
        return selective_search(image, settings)  # type: ignore[arg-type]

    @torch.inference_mode()
    def scores_and_boxes(
        self, image: np.ndarray, proposals: np.ndarray, times: StageTimes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities [P, K+1] and regressed boxes [P, 4(K+1)] (original pixels, clipped) per proposal."""
        s = self.settings
        height, width = image.shape[:2]
        t = time.perf_counter()
        inputs, factors = [], []
        for scale in s.scales:
            x, factor = prepare_image(self.model, image, scale, s.max_size)
            inputs.append(x)
            factors.append(factor)
        levels = _map_to_scales(proposals, factors)
        times.preprocess += self._time(t)

        num_classes = self.model.config.num_classes
        probs = torch.zeros((len(proposals), num_classes))
        deltas = torch.zeros((len(proposals), 4 * num_classes))
        for level, (x, factor) in enumerate(zip(inputs, factors)):
            idx = np.nonzero(levels == level)[0]
            t = time.perf_counter()
            features = self.model.features(batch_images([x]).to(self.device))
            times.backbone += self._time(t)
            if len(idx) == 0:
                continue
            t = time.perf_counter()
            boxes = proposals[idx] * factor
            if s.dedup:
                keep, inverse = unique_rois(boxes, self.model.spatial_scale)
            else:
                keep, inverse = np.arange(len(boxes)), np.arange(len(boxes))
            rois = torch.zeros((len(keep), 5), dtype=features.dtype)
            rois[:, 1:] = torch.from_numpy(boxes[keep].astype(np.float32))
            logits, box_deltas = self.model.head(features, rois.to(self.device))
            inv = torch.from_numpy(inverse)
            probs[idx] = torch.softmax(logits.float(), dim=1).cpu()[inv]
            deltas[idx] = box_deltas.float().cpu()[inv]
            times.head += self._time(t)
        t = time.perf_counter()
        if self.normalised_deltas:
            std = torch.tensor(box_coding.BBOX_STDS).repeat(num_classes)
            mean = torch.tensor(box_coding.BBOX_MEANS).repeat(num_classes)
            deltas = deltas * std + mean
        boxes = box_coding.decode(torch.from_numpy(proposals.astype(np.float32)), deltas)
        boxes = clip(boxes.view(-1, num_classes, 4), width, height).view(-1, 4 * num_classes)
        times.postprocess += time.perf_counter() - t
        return probs, boxes

    def postprocess(
        self, image_id: str, probs: torch.Tensor, boxes: torch.Tensor, score_threshold: float | None = None
    ) -> Detections:
        """Per-class thresholding and NMS, then the best ``max_detections`` over all classes."""
        from torchvision.ops import batched_nms

        s = self.settings
        threshold = s.score_threshold if score_threshold is None else score_threshold
        num_classes = probs.shape[1]
        scores = probs[:, 1:]
        cls_boxes = boxes.view(-1, num_classes, 4)[:, 1:]
        keep_mask = (scores >= threshold) & self._class_mask[None, :]
        roi_idx, cls_idx = torch.nonzero(keep_mask, as_tuple=True)
        sel_scores = scores[roi_idx, cls_idx]
        sel_boxes = cls_boxes[roi_idx, cls_idx]
        # +1 on x2, y2: torchvision's areas (x2 - x1) * (y2 - y1) become our inclusive ones
        exclusive = sel_boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])
        keep = batched_nms(exclusive, sel_scores, cls_idx, s.nms)
        keep = keep[: s.max_detections]  # batched_nms returns indices by decreasing score
        return Detections(
            image_id=image_id,
            boxes=sel_boxes[keep].numpy().astype(np.float32),
            scores=sel_scores[keep].numpy().astype(np.float32),
            labels=cls_idx[keep].numpy().astype(np.int64),
        )

    def detect(
        self,
        image: np.ndarray,
        proposals: np.ndarray | None = None,
        image_id: str = "",
        score_threshold: float | None = None,
    ) -> DetectionResult:
        """Detect objects in a BGR uint8 image; ``proposals`` [P, 4] in its pixels (computed when None)."""
        times = StageTimes()
        if proposals is None:
            t = time.perf_counter()
            proposals = self.propose(image)
            times.proposals = time.perf_counter() - t
        proposals = np.asarray(proposals, np.float32).reshape(-1, 4)
        height, width = image.shape[:2]
        if len(proposals) == 0:
            empty = Detections(image_id, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
            return DetectionResult(empty, times, 0, (width, height))
        probs, boxes = self.scores_and_boxes(image, proposals, times)
        t = time.perf_counter()
        detections = self.postprocess(image_id, probs, boxes, score_threshold)
        times.postprocess += time.perf_counter() - t
        return DetectionResult(detections, times, len(proposals), (width, height))


def detect_dataset(
    detector: Detector,
    records: Sequence,
    proposals: dict[str, np.ndarray],
    score_threshold: float = EVAL_SCORE_THRESHOLD,
    description: str = "detecting",
) -> tuple[list[Detections], StageTimes]:
    """Run :meth:`Detector.detect` over data set records (with their cached proposals), with a progress bar.

    Returns the detections of every image and the summed stage times. This is what ``fastrcnn evaluate`` and
    the periodic evaluation of ``fastrcnn train`` both call, so both report the same number.
    """
    from fastrcnn_cli.console import track
    from fastrcnn_cli.io import read_image

    total = StageTimes()
    results: list[Detections] = []
    was_training = detector.model.training
    detector.model.eval()
    try:
        for record in track(records, description):
            image = read_image(record.image_path)
            result = detector.detect(image, proposals.get(record.id), record.id, score_threshold)
            results.append(result.detections)
            for name in ("proposals", "preprocess", "backbone", "head", "postprocess"):
                setattr(total, name, getattr(total, name) + getattr(result.times, name))
    finally:
        detector.model.train(was_training)
    return results, total
