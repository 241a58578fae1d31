"""RoI pooling without argmax (``roi_pool_inference``): bit-identical values, chosen when no gradient is wanted."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fastrcnn_cli.errors import BuildError  # noqa: E402
from fastrcnn_cli.ops import _extension, roi_pool  # noqa: E402
from fastrcnn_cli.ops.bench import selective_search_like_rois  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _native() -> None:
    try:
        _extension.load_extension(with_cuda=False)
    except BuildError as exc:  # pragma: no cover - no compiler here
        pytest.skip(f"the C++ extension cannot be built: {exc}")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels", [3, 64, 100])
def test_inference_values_are_bit_identical(dtype: torch.dtype, channels: int) -> None:
    g = torch.Generator().manual_seed(channels)
    x = torch.randn((2, channels, 9, 13), generator=g).to(dtype)
    x[0, :, 2:5, 3:6] = 0.0  # ties
    x[1, :, 4, :] = -0.0
    rois = selective_search_like_rois(50, 144, 208, seed=1, batch_size=2).to(dtype)
    rois[0] = torch.tensor([0, 300, 300, 400, 400], dtype=dtype)  # outside the map: empty bins
    with_argmax, _ = torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 7, 7)
    without = torch.ops.fastrcnn.roi_pool_inference(x, rois, 1 / 16, 7, 7)
    assert torch.equal(_bits(with_argmax), _bits(without))


def test_channels_last_and_nan_input() -> None:
    x = torch.randn((1, 40, 10, 10))
    x[0, 5, 3, 3] = float("nan")
    x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.tensor([[0, 0, 0, 150, 150], [0, 20, 20, 90, 60]], dtype=torch.float32)
    a, _ = torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 2, 3)
    b = torch.ops.fastrcnn.roi_pool_inference(x, rois, 1 / 16, 2, 3)
    assert torch.equal(_bits(a), _bits(b))


def _ops_called(fn) -> set[str]:  # noqa: ANN001
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.name for e in prof.events() if e.name.startswith("fastrcnn::")}


def test_roi_pool_uses_the_inference_form_only_without_gradient() -> None:
    x = torch.randn((1, 8, 12, 12))
    rois = torch.tensor([[0, 0, 0, 100, 100]], dtype=torch.float32)
    with torch.no_grad():
        called = _ops_called(lambda: roi_pool(x.requires_grad_(True), rois, 3, 1 / 16))
    assert called == {"fastrcnn::roi_pool_inference"}
    x = x.detach()
    assert _ops_called(lambda: roi_pool(x, rois, 3, 1 / 16)) == {"fastrcnn::roi_pool_inference"}
    x.requires_grad_(True)
    out: list[torch.Tensor] = []
    assert _ops_called(lambda: out.append(roi_pool(x, rois, 3, 1 / 16))) == {"fastrcnn::roi_pool"}
    out[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fake_kernel_of_the_inference_form() -> None:
    x = torch.empty((1, 16, 5, 5), device="meta")
    rois = torch.empty((7, 5), device="meta")
    assert torch.ops.fastrcnn.roi_pool_inference(x, rois, 0.5, 2, 3).shape == (7, 16, 2, 3)
