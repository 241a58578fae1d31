"""The training data: which images each iteration trains on, and each image made ready for the network.

**The epoch order.** Each epoch visits every image and (with ``flip``) its mirror image once, in a random
order that pairs images of the same orientation (the original's aspect grouping), so a batch needs little
padding (:func:`epoch_order`). In a data-parallel run of P processes, batch ``b`` of an epoch goes to
process ``b mod P``; an epoch ends when fewer than P batches are left (those entries wait for the next one).

**Seeds from places, not from a generator's history.** Every random choice is drawn from a generator seeded
with the run's ``seed`` and the place of the draw:

- the order of epoch ``e``: ``(seed, 0, e)``;
- the image in slot ``j`` of iteration ``i`` (``j`` counts the images of the iteration over all processes):
  its scale, its photometric jitter and its RoI sample, ``(seed, 1, i, j)``.

So the batch of iteration ``i`` is a pure function of the settings and ``i`` (:class:`EpochPlan`,
:class:`TrainImages`): the same whichever process prepares it (:func:`make_loader`: ``workers`` DataLoader
processes, or none), in whatever order the workers finish, and a resumed run needs only its iteration to see
the very batches an uninterrupted run would have seen.

**One image** (:func:`load_train_image`): read, jittered, flipped, rescaled so its shorter side is the drawn
scale (its longer side at most ``max_size``), its proposals mapped alike, duplicates (boxes that pool the same
feature cells) dropped, then ``R / N`` RoIs sampled (:mod:`fastrcnn_cli.sampling`) with their regression
targets normalised (:mod:`fastrcnn_cli.box_coding`).
"""

from __future__ import annotations

import multiprocessing.context
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fastrcnn_cli import box_coding
from fastrcnn_cli.boxes import hflip
from fastrcnn_cli.data.voc import ImageRecord
from fastrcnn_cli.errors import FastRCNNError
from fastrcnn_cli.io import read_image
from fastrcnn_cli.model.backbones import Preprocessing
from fastrcnn_cli.model.fast_rcnn import batch_images, resize_image, scale_factor
from fastrcnn_cli.sampling import SamplingSettings, sample_rois, unique_rois

#: the first number after the seed: which kind of draw (keeps the streams of orders and of images apart)
ORDER_STREAM, IMAGE_STREAM = 0, 1
#: DataLoader workers by default: at most this many on a CPU (they take cores from the training arithmetic)
#: and on CUDA (where preparing images is what bounds the speed)
MAX_DEFAULT_WORKERS_CPU, MAX_DEFAULT_WORKERS_CUDA = 4, 8


def epoch_order(
    records: Sequence[ImageRecord], flip: bool, images_per_batch: int, rng: np.random.Generator
) -> np.ndarray:
    """The entries (record index, flipped) of one epoch, [E, 2], grouped so a batch shares an orientation.

    Each orientation group is shuffled and cut into batches; a group's leftover images fill one more batch,
    topped up from the group's start; then the batches are shuffled. E is the same for every ``rng``."""
    entries = [(i, 0) for i in range(len(records))]
    if flip:
        entries += [(i, 1) for i in range(len(records))]
    entries_arr = np.asarray(entries, np.int64)
    wide = np.array([records[i].width >= records[i].height for i, _ in entries], bool)
    groups = []
    for mask in (wide, ~wide):
        idx = np.nonzero(mask)[0]
        idx = idx[rng.permutation(len(idx))]
        usable = len(idx) - len(idx) % images_per_batch
        groups.append(idx[:usable].reshape(-1, images_per_batch))
        if usable < len(idx):
            leftover = idx[usable:]
            top_up = np.resize(idx, images_per_batch - len(leftover))
            groups.append(np.concatenate([leftover, top_up])[None, :])
    batches = np.concatenate([g for g in groups if len(g)], axis=0)
    batches = batches[rng.permutation(len(batches))]
    return entries_arr[batches.reshape(-1)]


class ImageKey(NamedTuple):
    """One image of one iteration: what :class:`TrainImages` needs to prepare it, and nothing else."""

    record: int  #: index into the training records
    flipped: bool
    iteration: int  #: 0-based iteration
    slot: int  #: the image's place in the iteration, over all processes (rank x N + b)


class EpochPlan:
    """Which images each process trains on at each iteration: a pure function of the seed and the iteration."""

    def __init__(
        self, records: Sequence[ImageRecord], flip: bool, images_per_batch: int, world_size: int, seed: int
    ) -> None:
        self.records = records
        self.flip = flip
        self.images_per_batch = images_per_batch
        self.world_size = world_size
        self.seed = seed
        self._cached: tuple[int, np.ndarray] | None = None
        self.batches_per_epoch = len(self.order(0)) // (images_per_batch * world_size)

    def order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s (0-based) entries [E, 2]; a tiny data set's order repeated to fill one iteration."""
        if self._cached is None or self._cached[0] != epoch:
            order = epoch_order(self.records, self.flip, self.images_per_batch,
                                np.random.default_rng([self.seed, ORDER_STREAM, epoch]))
            needed = self.images_per_batch * self.world_size
            if len(order) < needed:
                order = np.concatenate([order] * -(-needed // len(order)))
            self._cached = (epoch, order)
        return self._cached[1]

    def epoch(self, iteration: int) -> int:
        """The 0-based epoch that 0-based ``iteration`` draws from."""
        return iteration // self.batches_per_epoch

    def batch(self, iteration: int, rank: int) -> list[ImageKey]:
        """The images process ``rank`` trains on at (0-based) ``iteration``."""
        n = self.images_per_batch
        position = (iteration % self.batches_per_epoch) * n * self.world_size + rank * n
        entries = self.order(self.epoch(iteration))[position : position + n]
        return [ImageKey(int(r), bool(f), iteration, rank * n + b) for b, (r, f) in enumerate(entries)]


class PlanSampler:
    """The DataLoader's batch sampler: the plan's batches for one process from ``start`` on, without end
    (the loop decides when to stop, and a time budget may move the end while it runs)."""

    def __init__(self, plan: EpochPlan, rank: int, start: int) -> None:
        self.plan, self.rank, self.start = plan, rank, start

    def __iter__(self) -> Iterator[list[ImageKey]]:
        iteration = self.start
        while True:
            yield self.plan.batch(iteration, self.rank)
            iteration += 1


@dataclass(frozen=True)
class ImageSettings:
    """How each training image is prepared (the part of the training settings the data workers need)."""

    seed: int
    scales: tuple[int, ...]  #: shorter sides, one drawn per image
    max_size: int
    photometric: float  #: jitter strength (0: none)
    sampling: SamplingSettings


@dataclass
class TrainImage:
    image: torch.Tensor  #: [3, H, W] network input
    rois: torch.Tensor  #: [R, 4] network-input pixels
    labels: torch.Tensor  #: [R]
    targets: torch.Tensor  #: [R, 4] normalised offsets


class Batch(NamedTuple):
    """One process's mini-batch (a NamedTuple, so the DataLoader can pin its tensors)."""

    images: torch.Tensor  #: [N, 3, H, W], zero-padded
    rois: torch.Tensor  #: [R, 5]: (image index in the batch, x1, y1, x2, y2) in network-input pixels
    labels: torch.Tensor  #: [R]
    targets: torch.Tensor  #: [R, 4]

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in self))


class FailedImage(NamedTuple):
    """An image that could not be prepared: its error goes to the training process as it is (the DataLoader
    would re-raise it from a worker with the worker's traceback as its message)."""

    error: FastRCNNError


def image_rng(seed: int, iteration: int, slot: int) -> np.random.Generator:
    """The generator of every random choice about the image in ``slot`` of ``iteration``."""
    return np.random.default_rng([seed, IMAGE_STREAM, iteration, slot])


def photometric_jitter(image: np.ndarray, factors: tuple[float, float, float]) -> np.ndarray:
    """Scale a BGR uint8 image's brightness, then its contrast (about the mean), then its saturation (about
    each pixel's grey value) by the three ``factors``."""
    brightness, contrast, saturation = factors
    x = image.astype(np.float32) * brightness
    x = (x - x.mean()) * contrast + x.mean()
    grey = x @ np.array([0.114, 0.587, 0.299], np.float32)  # BGR luma weights
    x = (x - grey[..., None]) * saturation + grey[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def load_train_image(
    record: ImageRecord,
    flipped: bool,
    scale: int,
    max_size: int,
    sampling: SamplingSettings,
    proposals: np.ndarray,
    preprocessing: Preprocessing,
    spatial_scale: float,
    generator: torch.Generator,
    jitter: tuple[float, float, float] | None = None,
) -> TrainImage:
    """One training image with its sampled RoIs (see the module docstring)."""
    image = read_image(record.image_path)
    if jitter is not None:
        image = photometric_jitter(image, jitter)
    height, width = image.shape[:2]
    gt = record.boxes.astype(np.float32)
    props = np.asarray(proposals, np.float32).reshape(-1, 4)
    if flipped:
        image = image[:, ::-1]
        gt = hflip(gt, width)
        props = hflip(props, width)
    factor = scale_factor(height, width, scale, max_size)
    image = resize_image(np.ascontiguousarray(image), factor)
    gt = gt * factor
    props = props * factor
    keep, _ = unique_rois(props, spatial_scale)
    props = props[keep]
    sampled = sample_rois(
        torch.from_numpy(props), torch.from_numpy(gt), torch.from_numpy(record.labels + 1), sampling, generator
    )
    return TrainImage(
        image=preprocessing.image_to_tensor(image),
        rois=sampled.boxes.float(),
        labels=sampled.labels,
        targets=box_coding.normalise(sampled.targets.float()),
    )


class TrainImages(Dataset):
    """The training images, indexed by :class:`ImageKey`: every random choice comes from the key's seed."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        proposals: Mapping[str, np.ndarray],
        settings: ImageSettings,
        preprocessing: Preprocessing,
        spatial_scale: float,
    ) -> None:
        self.records = list(records)
        self.proposals = proposals
        self.settings = settings
        self.preprocessing = preprocessing
        self.spatial_scale = spatial_scale

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: ImageKey) -> TrainImage | FailedImage:
        s = self.settings
        rng = image_rng(s.seed, key.iteration, key.slot)
        scale = int(s.scales[int(rng.integers(len(s.scales)))]) if len(s.scales) > 1 else int(s.scales[0])
        jitter = None
        if s.photometric:
            jitter = tuple(float(f) for f in rng.uniform(1 - s.photometric, 1 + s.photometric, 3))
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        record = self.records[key.record]
        try:
            return load_train_image(
                record, key.flipped, scale, s.max_size, s.sampling, self.proposals.get(record.id, np.zeros((0, 4))),
                self.preprocessing, self.spatial_scale, generator, jitter,
            )
        except FastRCNNError as exc:
            return FailedImage(exc)


class Collate:
    """A list of :class:`TrainImage` -> a :class:`Batch` (images padded to a multiple of ``multiple``), or the
    first :class:`FailedImage`."""

    def __init__(self, multiple: int = 1) -> None:
        self.multiple = multiple

    def __call__(self, items: list[TrainImage | FailedImage]) -> Batch | FailedImage:
        for item in items:
            if isinstance(item, FailedImage):
                return item
        rois = [torch.cat([torch.full((len(it.rois), 1), float(b)), it.rois], dim=1) for b, it in enumerate(items)]
        return Batch(
            batch_images([it.image for it in items], self.multiple),
            torch.cat(rois),
            torch.cat([it.labels for it in items]),
            torch.cat([it.targets for it in items]),
        )


def default_workers(device: torch.device) -> int:
    """DataLoader workers when ``workers`` is not given.

    On CUDA, preparing images (JPEG decoding, resizing, jitter, RoI sampling) is what bounds the speed: up to
    :data:`MAX_DEFAULT_WORKERS_CUDA`, one core left to the training process. On a CPU, preparing the images is a
    few percent of an iteration, the network's arithmetic the rest, and it already uses every core: workers
    can only hide those few percent, and each takes cycles from the arithmetic. So one worker per four cores,
    at most :data:`MAX_DEFAULT_WORKERS_CPU`, and none on a machine of fewer than four cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(0, min(MAX_DEFAULT_WORKERS_CUDA, cores - 1))
    return min(MAX_DEFAULT_WORKERS_CPU, cores // 4)


def _worker_init(_: int) -> None:
    """A DataLoader worker leaves Ctrl-C and SIGTERM to the training process, which stops at the end of the
    iteration and then ends its workers (:mod:`fastrcnn_cli.interrupts`): in a process group of its own, it does
    not get the terminal's Ctrl-C nor a SIGTERM sent to the job's group (a worker killed by one would make the
    DataLoader fail at once), while the training process can still end it. It also keeps OpenCV to one thread:
    the workers are the parallelism (safe in a fresh process; in a forked one, OpenCV's thread pool copied
    mid-state deadlocks)."""
    import cv2

    os.setpgrp()
    cv2.setNumThreads(1)


class _WorkerProcess(multiprocessing.context.SpawnProcess):
    """A spawned DataLoader worker that ends with ``os._exit`` once its loop is done.

    A spawned process otherwise leaves through ``sys.exit``: the interpreter's finalisation, then the C++
    libraries' static destructors. One of those (in a library the worker loaded, not in our code) sometimes
    destroys a thread that is still running, and ``std::terminate`` kills the finished worker with SIGABRT
    ("terminate called without an active exception"), which the DataLoader reports as a crash of the run,
    although every batch had been delivered (intermittently, at the end of a run or of a test). A worker
    has nothing to finalise: its results went through the queue, whose own finaliser ``_bootstrap`` has run."""

    def _bootstrap(self, parent_sentinel: int | None = None) -> int:  # type: ignore[override]
        code = super()._bootstrap(parent_sentinel)
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        os._exit(code)


class _WorkerContext(multiprocessing.context.SpawnContext):
    Process = _WorkerProcess


def make_loader(
    images: TrainImages, plan: EpochPlan, rank: int, start: int, workers: int, device: torch.device, multiple: int
) -> DataLoader:
    """The DataLoader of one process's batches from iteration ``start`` on (pinned memory on CUDA).

    Workers are *spawned*, not forked: the training process holds threads (torch's and OpenCV's pools, a
    progress display) that a fork would copy in a locked state (a forked worker hung in OpenCV). Spawning costs
    a few seconds once per run; a worker ends with ``os._exit`` (:class:`_WorkerProcess`). The loader draws
    nothing from torch's global generator (its own generator seeds the workers, whose global generators the
    data code never uses), so the training's random state is the same with any ``workers``."""
    return DataLoader(
        images,
        batch_sampler=PlanSampler(plan, rank, start),
        num_workers=workers,
        collate_fn=Collate(multiple),
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        multiprocessing_context=_WorkerContext() if workers else None,
        generator=torch.Generator(),
    )


def without_difficult(record: ImageRecord) -> ImageRecord:
    """The record with its difficult boxes (VOC's ``difficult``, COCO's ``iscrowd``) left out, as the original
    trains (py-faster-rcnn's ``use_diff = False``): such a box is neither a foreground target nor a reason to
    spare a proposal, so a proposal on it may be sampled as background. Evaluation ignores them either way."""
    if not len(record.difficult) or not record.difficult.any():
        return record
    keep = ~record.difficult
    return replace(record, boxes=record.boxes[keep], labels=record.labels[keep], difficult=record.difficult[keep],
                   areas=None if record.areas is None else record.areas[keep])


def usable_records(records: Sequence[ImageRecord], proposals: Mapping[str, np.ndarray]) -> list[ImageRecord]:
    """Images that can give a RoI: with a ground-truth box (always foreground) or with proposals at all."""
    return [r for r in records if r.num_objects > 0 or len(proposals.get(r.id, ())) > 0]
