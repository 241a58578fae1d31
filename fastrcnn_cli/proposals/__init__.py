"""Region proposals for Fast R-CNN: Selective Search, the proposal cache, importers and recall.

* :class:`ProposalSettings` (defined in :mod:`fastrcnn_cli.proposal_settings`, which imports nothing heavy, so
  the command line reads it without loading NumPy) -- how proposals are made.
* :mod:`.selective_search` -- :func:`selective_search` (OpenCV's implementation; how its boxes are converted
  to our convention and mapped back to original pixels).
* :mod:`.native` -- our Selective Search (``ProposalSettings(proposer="native")``): OpenCV's algorithm in the C++
  extension, faster, parallel on one image, with a seeded ranking of its own.
* :mod:`.cache` -- :func:`load_or_compute_proposals`, the cache folder layout, parallel workers,
  resuming, sharding and merging.
* :mod:`.matlab` -- importing the original Fast R-CNN's ``.mat`` files (:func:`load_proposal_file`).
* :mod:`.interop` -- Detectron2's and MMDetection's proposal files, in and out (read as data only).
* :mod:`.recall` -- :func:`proposal_recall`: recall at IoU thresholds and MABO, per class.

Every box is ``(x1, y1, x2, y2)`` float32, 0-based inclusive pixels of the original image
(:mod:`fastrcnn_cli.boxes`).

None of these modules imports torch at import time, so worker processes start quickly. Note that the
package attribute ``selective_search`` is the *function*; the module of the same name is reached with
``from fastrcnn_cli.proposals.selective_search import ...``.
"""

from __future__ import annotations

from fastrcnn_cli.proposal_settings import ProposalSettings
from fastrcnn_cli.proposals.cache import (
    CacheMismatchError,
    ProposalCache,
    ProposalRun,
    default_cache_dir,
    imported_cache_dir,
    load_or_compute_proposals,
    merge_caches,
    run_proposals,
    shard_records,
)
from fastrcnn_cli.proposals.matlab import import_mat, load_proposal_file, read_dataset_mat
from fastrcnn_cli.proposals.recall import RecallReport, proposal_recall
from fastrcnn_cli.proposals.selective_search import (
    proposals_for_file,
    read_image_for_proposals,
    selective_search,
)

__all__ = [
    "CacheMismatchError",
    "ProposalCache",
    "ProposalRun",
    "ProposalSettings",
    "RecallReport",
    "default_cache_dir",
    "import_mat",
    "imported_cache_dir",
    "load_or_compute_proposals",
    "load_proposal_file",
    "merge_caches",
    "proposal_recall",
    "proposals_for_file",
    "read_dataset_mat",
    "read_image_for_proposals",
    "run_proposals",
    "selective_search",
    "shard_records",
]
