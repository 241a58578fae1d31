"""Our NMS (fastrcnn_cli.nms) gives torchvision's results exactly, without importing torchvision."""

from __future__ import annotations

import pytest
import torch

from fastrcnn_cli.nms import batched_nms, nms

torchvision = pytest.importorskip("torchvision")


def random_boxes(gen: torch.Generator, n: int, grid: bool = False) -> torch.Tensor:
    if grid:  # integer corners: many exactly equal IoUs, some exactly at the threshold
        xy = torch.randint(0, 40, (n, 2), generator=gen).float()
        wh = torch.randint(1, 20, (n, 2), generator=gen).float()
    else:
        xy = torch.rand((n, 2), generator=gen) * 300
        wh = torch.rand((n, 2), generator=gen) * 80 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 1 / 3])
def test_nms_is_torchvisions(seed: int, threshold: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    n = 50 + 300 * seed
    boxes = random_boxes(gen, n, grid=seed % 2 == 1)
    scores = torch.rand(n, generator=gen)
    if seed % 3 == 0:
        scores = (scores * 10).round() / 10  # ties
    assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


@pytest.mark.parametrize("n", [0, 1, 200, 1000, 1001, 3000])  # both sides of torchvision's coordinate-trick switch
def test_batched_nms_is_torchvisions(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    boxes = random_boxes(gen, n, grid=n % 2 == 1)
    scores = torch.rand(n, generator=gen)
    idxs = torch.randint(0, 4, (n,), generator=gen)
    ours = batched_nms(boxes, scores, idxs, 0.3)
    theirs = torchvision.ops.batched_nms(boxes, scores, idxs, 0.3)
    assert torch.equal(ours, theirs)
