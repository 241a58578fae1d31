"""Detection with a trained model: the paper's test-time procedure, timed stage by stage.

For one image:

1. proposals: Selective Search with the settings the model was trained with (:func:`proposal_settings_from_meta`),
   or given boxes (:func:`load_image_proposals`: a ``.mat``/``.npy`` file, a folder of them, or a ``fastrcnn
   propose`` cache), in original image pixels; rows that are not finite or have x2 < x1 are dropped and the
   rest clipped to the image (:func:`sanitise_proposals`);
2. preprocessing: resize so the shorter side is ``scale`` (600) with the longer side at most ``max_size``
   (1000), normalise;
3. backbone: one convolutional pass over the whole image;
4. head: RoI pooling of every proposal out of the shared feature map, fc6, fc7, softmax and class-specific
   box regression. Proposals that round to the same feature cells (stride 16) are pooled once
   (``dedup``, the original's ``DEDUP_BOXES``);
5. post-processing: decode the offsets, clip to the image, per class drop scores under ``score_threshold``,
   NMS at ``nms`` IoU (torchvision's batched NMS, :mod:`fastrcnn_cli.nms`, with the +1-pixel areas of
   :mod:`fastrcnn_cli.boxes`),
   keep the ``max_detections`` best over all classes. NMS runs on the candidates in decreasing score order,
   a prefix at a time, until ``max_detections`` survive: exactly the same result as one run over all of them
   (greedy NMS decides each box from higher-scored boxes only), much faster at the evaluation floor of 0.001.

The test scale defaults to the checkpoint's first training scale and its ``max_size``
(:meth:`DetectSettings.for_checkpoint`), the same scale ``train``'s periodic evaluation uses.

Multi-scale testing (several ``scale`` values): the image is processed at each scale, and each proposal is pooled
from the scale at which its area is closest to 224 x 224 pixels, as in the original's image pyramid.

Each stage's time is recorded in :class:`StageTimes` (synchronised on CUDA), so the numbers ``detect``
prints and the ones ``benchmark`` reports are the same measurements.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fastrcnn_cli import box_coding, progress
from fastrcnn_cli.boxes import clip
from fastrcnn_cli.data.records import ImageRecord
from fastrcnn_cli.detect_settings import DetectSettings
from fastrcnn_cli.detections import Detections
from fastrcnn_cli.devices import synchronize
from fastrcnn_cli.errors import CheckpointError, ExitCode, InputError, SettingsError
from fastrcnn_cli.io import read_image
from fastrcnn_cli.model.checkpoint import Checkpoint
from fastrcnn_cli.model.fast_rcnn import FastRCNN, batch_images, prepare_image, size_multiple
from fastrcnn_cli.nms import batched_nms  # torchvision's NMS results without importing torchvision
from fastrcnn_cli.proposals.cache import BOXES_DIR, META_FILE, ProposalCache, file_name, read_entry
from fastrcnn_cli.proposals.matlab import check_and_clean, load_proposal_file
from fastrcnn_cli.proposal_settings import ProposalSettings
from fastrcnn_cli.proposals.selective_search import selective_search
from fastrcnn_cli.sampling import unique_rois


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


def map_to_scales(boxes: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """For each box, the index of the scale at which its area is closest to 224^2 (the original's pyramid rule)."""
    if len(factors) == 1:
        return np.zeros(len(boxes), np.int64)
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    areas = w[:, None] * h[:, None] * (np.asarray(factors)[None, :] ** 2)
    return np.abs(areas - 224 * 224).argmin(axis=1)


class NetworkBackend(Protocol):
    """A network the Detector can run instead of a PyTorch :class:`FastRCNN` (e.g.
    :class:`fastrcnn_cli.onnx_backend.OnnxNetwork`): the steps between the proposals and the post-processing."""

    config: Any  #: the :class:`~fastrcnn_cli.model.fast_rcnn.ModelConfig` (classes, head)
    runtime: str  #: its name for people, e.g. "ONNX Runtime"

    def scores_and_boxes(
        self, image: np.ndarray, proposals: np.ndarray, settings: DetectSettings, times: StageTimes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`Detector.scores_and_boxes`: probabilities [P, K+1] and clipped boxes [P, 4(K+1)] (CPU)."""
        ...


class Detector:
    """A model plus test settings; :meth:`detect` runs the whole procedure on one image.

    ``model`` is a PyTorch :class:`FastRCNN` or a :class:`NetworkBackend` (an ONNX Runtime session); proposals,
    post-processing and timing are the same code for both."""

    def __init__(
        self,
        model: FastRCNN | NetworkBackend,
        settings: DetectSettings | None = None,
        device: torch.device | str = "cpu",
        proposal_settings: ProposalSettings | None = None,
        normalised_deltas: bool = False,
    ) -> None:
        """``normalised_deltas``: the model's regressor still predicts normalised offsets (a model in training,
        before :func:`fastrcnn_cli.box_coding.fold_normalisation`); saved models never do."""
        self.backend: NetworkBackend | None = None if isinstance(model, torch.nn.Module) else model
        self.model: Any = model.eval().to(device) if self.backend is None else model
        self.normalised_deltas = normalised_deltas
        if self.backend is None:
            # build/load the native RoI pooling operator now, so no timed detection pays for it
            from fastrcnn_cli.ops._extension import native_available

            native_available(torch.device(device).type)
        self.settings = settings or DetectSettings()
        self.device = torch.device(device)
        self.proposal_settings = proposal_settings
        classes = model.config.classes
        if self.settings.classes is not None:
            unknown = [c for c in self.settings.classes if c not in classes]
            if unknown:
                raise UnknownClassError(
                    "classes", f"names {', '.join(unknown)}, which the model does not know (it knows: {', '.join(classes)})"
                )
            self._class_mask = torch.tensor([c in self.settings.classes for c in classes])
        else:
            self._class_mask = torch.ones(len(classes), dtype=torch.bool)

    def _time(self, start: float) -> float:
        synchronize(self.device)
        return time.perf_counter() - start

    def with_settings(self, settings: DetectSettings) -> Detector:
        """The same network, device and proposal settings with other detection settings."""
        if settings == self.settings:
            return self
        training = self.backend is None and self.model.training
        other = Detector(self.backend or self.model, settings, self.device, self.proposal_settings, self.normalised_deltas)
        if training:
            self.model.train()  # the model is shared: left in the mode it had (a model in training)
        return other

    def propose(self, image: np.ndarray) -> np.ndarray:
        return selective_search(image, self.proposal_settings or ProposalSettings())

    @torch.inference_mode()
    def scores_and_boxes(
        self, image: np.ndarray, proposals: np.ndarray, times: StageTimes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities [P, K+1] and regressed boxes [P, 4(K+1)] (original pixels, clipped) per proposal."""
        if self.backend is not None:
            return self.backend.scores_and_boxes(image, proposals, self.settings, times)
        s = self.settings
        height, width = image.shape[:2]
        t = time.perf_counter()
        inputs, factors = [], []
        for scale in s.scale:
            x, factor = prepare_image(self.model, image, scale, s.max_size)
            inputs.append(x)
            factors.append(factor)
        levels = map_to_scales(proposals, factors)
        times.preprocess += self._time(t)

        num_classes = self.model.config.num_classes
        probs = torch.zeros((len(proposals), num_classes))
        deltas = torch.zeros((len(proposals), 4 * num_classes))
        for level, (x, factor) in enumerate(zip(inputs, factors)):
            idx = np.nonzero(levels == level)[0]
            if len(idx) == 0:
                continue  # no proposal is pooled at this scale: skip its backbone pass
            t = time.perf_counter()
            features = self.model.features(batch_images([x], size_multiple(self.device)).to(self.device))
            times.backbone += self._time(t)
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
        """Per-class thresholding and NMS, then the best ``max_detections`` over all classes.

        ``probs`` [P, K+1] (column 0: background) and ``boxes`` [P, 4(K+1)] (original pixels) as from
        :meth:`scores_and_boxes`. A (proposal, class) pair is a candidate when its score is at least the
        threshold and the class passes the ``classes`` filter; NMS is greedy per class at IoU > ``nms`` (areas
        with +1 pixel). Returned labels are 0-based indices into the model's classes, sorted by decreasing score.

        Greedy NMS decides a box from the higher-scored boxes of its class alone, so running it on the
        candidates in decreasing score order, a prefix at a time, gives exactly the result of one run on all
        of them as soon as ``max_detections`` boxes survive. With the evaluation floor (0.001) an image can
        have tens of thousands of candidates; the first prefix (1000) is almost always enough.
        """
        s = self.settings
        threshold = s.score_threshold if score_threshold is None else score_threshold
        num_classes = probs.shape[1]
        probs, boxes = probs.cpu(), boxes.cpu()
        scores = probs[:, 1:]
        cls_boxes = boxes.view(-1, num_classes, 4)[:, 1:]
        keep_mask = (scores >= threshold) & self._class_mask[None, :]
        roi_idx, cls_idx = torch.nonzero(keep_mask, as_tuple=True)
        sel_scores = scores[roi_idx, cls_idx]
        sel_boxes = cls_boxes[roi_idx, cls_idx]
        # +1 on x2, y2: torchvision's areas (x2 - x1) * (y2 - y1) become our inclusive ones
        exclusive = sel_boxes + torch.tensor([0.0, 0.0, 1.0, 1.0])
        order = torch.argsort(sel_scores, descending=True, stable=True)
        n = int(order.numel())
        size = min(n, max(1000, 10 * s.max_detections))
        while True:
            prefix = order[:size]
            kept = batched_nms(exclusive[prefix], sel_scores[prefix], cls_idx[prefix], s.nms)
            if kept.numel() >= s.max_detections or size >= n:
                break
            size = min(n, size * 4)
        keep = prefix[kept[: s.max_detections]]  # batched_nms returns indices by decreasing score
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
        height, width = image.shape[:2]
        proposals = sanitise_proposals(proposals, width, height)
        if len(proposals) == 0:
            empty = Detections(image_id, np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
            return DetectionResult(empty, times, 0, (width, height))
        probs, boxes = self.scores_and_boxes(image, proposals, times)
        t = time.perf_counter()
        detections = self.postprocess(image_id, probs, boxes, score_threshold)
        times.postprocess += time.perf_counter() - t
        return DetectionResult(detections, times, len(proposals), (width, height))


def sanitise_proposals(proposals: np.ndarray, width: int, height: int) -> np.ndarray:
    """Proposals as float32 [P, 4], clipped to the image, without rows that are not finite or have x2 < x1 or
    y2 < y1 (imported files can hold such boxes; the box decoding needs positive widths)."""
    boxes = np.asarray(proposals, np.float32).reshape(-1, 4)
    finite = np.isfinite(boxes).all(axis=1)
    boxes = clip(boxes[finite], width, height)
    ok = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    return np.ascontiguousarray(boxes[ok])


class UnknownClassError(SettingsError):
    """``classes`` names a class the model (or the data set) does not know: the input does not fit the
    request, exit code 1. Named by field, like every :class:`SettingsError`."""

    exit_code = ExitCode.FAILURE


def proposal_settings_from_meta(
    meta: Checkpoint,
    top: int | None = None,
    proposer: str | None = None,
    *,
    mode: str | None = None,
    max_side: int | None = None,
    min_size: int | None = None,
) -> ProposalSettings:
    """The Selective Search settings a checkpoint was trained with (``meta.proposals``; the defaults when the
    checkpoint records none), with each setting given (not None) laid over them. A recorded set that is not
    usable is a :class:`CheckpointError` naming the file; a given value out of range an :class:`InputError`
    naming the setting."""
    recorded = dict(meta.proposals or {})
    try:
        settings = ProposalSettings.from_dict(recorded) if recorded else ProposalSettings()
    except (InputError, TypeError, ValueError) as exc:
        raise CheckpointError(f"its proposal settings {recorded} are not usable here ({exc})", meta.path) from None
    given = {"mode": mode, "max_side": max_side, "top": top, "min_size": min_size, "proposer": proposer}
    return dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})


#: names a per-image proposal file may have in a ``--proposals`` folder, for an image ``<stem>.<ext>``
PROPOSAL_FILE_PATTERNS = ("{stem}_boxes.mat", "{stem}.mat", "{stem}.npy", "{stem}_boxes.npy")


def read_proposal_file(path: str | Path, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Proposals of one image from a file: [P, 4] float32 in our convention (0-based inclusive x1, y1, x2, y2).

    - ``.mat``: the original Fast R-CNN's per-image demo files (``<id>_boxes.mat``, variable ``boxes``, x1 y1 x2
      y2 0-based), read by :func:`fastrcnn_cli.proposals.load_proposal_file`, which checks them against
      ``image_size`` (width, height) and says so when the layout looks wrong.
    - ``.npy``: a [P, 4] array, x1, y1, x2, y2 in our convention.

    Raises :class:`InputError` naming the file. (The per-data-set MATLAB files of the original are imported
    into a proposal cache by ``fastrcnn propose --import-mat``.)
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such proposal file", path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return load_proposal_file(path, image_size=image_size)
    if suffix != ".npy":
        raise InputError("unknown proposal file type (expected .mat with a 'boxes' variable, or .npy)", path)
    try:
        boxes = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any reader failure: not a proposal file
        raise InputError(f"not a readable .npy file ({type(exc).__name__}: {exc})", path) from None
    if boxes.dtype.kind not in "iuf" or boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"proposals must be a [P, 4] array of x1, y1, x2, y2 (got {boxes.dtype} {tuple(boxes.shape)})", path)
    # the same rules as a .mat file: NaN refused, a few boxes outside clipped, many refused
    return check_and_clean(boxes, image_size, None, "the boxes", path)


def find_proposal_file(folder: Path, image_path: Path) -> Path | None:
    """The per-image proposal file for ``image_path`` in ``folder`` (see :data:`PROPOSAL_FILE_PATTERNS`)."""
    for pattern in PROPOSAL_FILE_PATTERNS:
        candidate = folder / pattern.format(stem=image_path.stem)
        if candidate.is_file():
            return candidate
    return None


def load_image_proposals(source: str | Path, image_path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The proposals of one image from ``--proposals SOURCE``, which is one of

    - a file (:func:`read_proposal_file`), for a single image;
    - a proposal cache folder of ``fastrcnn propose`` (it has ``proposals.json``): the entry of the image id
      ``image_path.stem``, which must have been made for an image of this size;
    - a folder of per-image files named as in :data:`PROPOSAL_FILE_PATTERNS`.

    Raises :class:`InputError` naming the image when there are none for it.
    """
    source, image_path = Path(source), Path(image_path)
    if source.is_file():
        return read_proposal_file(source, image_size)
    if (source / META_FILE).is_file():
        ProposalCache.read_meta(source)  # a clear error when it is not a cache of ours
        boxes = read_entry(source / BOXES_DIR / file_name(image_path.stem), image_size)
        if boxes is None:
            raise InputError(
                f"the proposal cache {source} has no proposals for image id {image_path.stem!r} at "
                f"{image_size[0]} x {image_size[1]} pixels",
                image_path,
            )
        return boxes
    file = find_proposal_file(source, image_path)
    if file is None:
        names = ", ".join(p.format(stem=image_path.stem) for p in PROPOSAL_FILE_PATTERNS)
        raise InputError(f"no proposal file for this image in {source} (looked for {names})", image_path)
    return read_proposal_file(file, image_size)


def detect_dataset(
    detector: Detector,
    records: Sequence[ImageRecord],
    proposals: Mapping[str, np.ndarray],
    score_threshold: float = EVAL_SCORE_THRESHOLD,
    description: str = "detecting",
) -> tuple[list[Detections], StageTimes]:
    """Run :meth:`Detector.detect` over data set records (with their cached proposals), with a progress bar.

    An image without an entry in ``proposals`` (one the proposal stage could not process, or one missing
    from an imported set) gets no detections, with a warning: it still counts in the evaluation.

    Returns the detections of every image and the summed stage times. Every evaluation calls it through
    :func:`fastrcnn_cli.pipeline.evaluate_split`, so every command reports the same number.
    """
    total = StageTimes()
    results: list[Detections] = []
    missing: list[str] = []
    torch_model = detector.model if detector.backend is None else None
    was_training = torch_model is not None and torch_model.training
    if torch_model is not None:
        torch_model.eval()
    try:
        for record in progress.track(records, description, unit="img"):
            boxes = proposals.get(record.id)
            if boxes is None:  # left out by the proposal stage (it said why): nothing can be detected
                missing.append(record.id)
                results.append(Detections.empty(record.id))
                continue
            image = read_image(record.image_path)
            result = detector.detect(image, boxes, record.id, score_threshold)
            results.append(result.detections)
            for name in ("proposals", "preprocess", "backbone", "head", "postprocess"):
                setattr(total, name, getattr(total, name) + getattr(result.times, name))
    finally:
        if torch_model is not None:
            torch_model.train(was_training)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        progress.warn(f"{len(missing)} of {len(records)} images have no proposals and count as images without detections: {shown}")
    return results, total
