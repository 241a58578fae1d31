"""RoI max pooling: the native CPU operator and the pure-PyTorch reference against torchvision.ops.roi_pool.

The first run compiles the CPU operator (about a minute); later runs load it from the cache.
"""

from __future__ import annotations

import math

import pytest
import torch

from fastrcnn_cli.errors import BuildError
from fastrcnn_cli.ops import (
    RoIPool,
    _extension,
    load_extension,
    roi_pool,
    roi_pool_backward_reference,
    roi_pool_reference,
    rois_from_boxes,
)

torchvision = pytest.importorskip("torchvision")
FLT_MAX = 3.4028234663852886e38


@pytest.fixture(scope="module", autouse=True)
def native_ops():
    try:
        load_extension(with_cuda=False)
    except BuildError as exc:  # CI has a compiler: a failed build is a failure, not a skip
        pytest.fail(f"the RoI pooling operator did not build: {exc}")


def fastrcnn_pool(x, rois, scale, ph, pw):
    return torch.ops.fastrcnn.roi_pool(x, rois, scale, ph, pw)


def torchvision_pool(x, rois, scale, ph, pw):
    return torch.ops.torchvision.roi_pool(x, rois, scale, ph, pw)


def random_rois(gen, k, batch, image_h, image_w, scale, dtype=torch.float32):
    """A mix of RoIs: ordinary, on .5 boundaries of the scaled grid, partly or wholly outside, degenerate."""
    step = 1.0 / scale
    parts = []
    # ordinary boxes with fractional corners
    x1 = torch.rand(k, generator=gen) * image_w
    y1 = torch.rand(k, generator=gen) * image_h
    w = torch.rand(k, generator=gen) * image_w / 2 + 1
    h = torch.rand(k, generator=gen) * image_h / 2 + 1
    parts.append(torch.stack([x1, y1, x1 + w, y1 + h], 1))
    # corners exactly at (m + 0.5) / scale: round-half-away-from-zero matters, including negative coordinates
    m = torch.randint(-3, int(image_w * scale) + 3, (k, 4), generator=gen).float()
    half = (m + 0.5) * step
    parts.append(torch.stack([half[:, 0], half[:, 1], half[:, 0] + half[:, 2].abs(), half[:, 1] + half[:, 3].abs()], 1))
    # partly and wholly outside, and degenerate (x2 < x1)
    parts.append(torch.tensor([[-50.0, -40.0, 30.0, 20.0], [image_w - 20, image_h - 10, image_w + 90, image_h + 70],
                               [image_w + 100, image_h + 100, image_w + 300, image_h + 200], [-300, -300, -100, -100],
                               [40.0, 40.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, image_w - 1, image_h - 1]]))
    boxes = torch.cat(parts)
    b = torch.randint(0, batch, (boxes.shape[0], 1), generator=gen).float()
    return torch.cat([b, boxes], 1).to(dtype)


CASES = [
    # (N, C, H, W, scale, (ph, pw), dtype, channels_last)
    (1, 3, 10, 12, 1 / 16, (7, 7), torch.float32, False),
    (2, 37, 19, 31, 1 / 16, (7, 7), torch.float32, False),
    (2, 64, 24, 17, 1 / 8, (6, 6), torch.float32, True),
    (1, 130, 38, 63, 1 / 16, (7, 7), torch.float32, False),
    (3, 5, 9, 9, 1 / 8, (6, 6), torch.float64, False),
    (2, 70, 13, 22, 1 / 16, (7, 7), torch.float64, True),
    (1, 16, 5, 40, 1 / 8, (2, 9), torch.float32, False),
    (1, 1, 6, 6, 0.3, (3, 2), torch.float32, False),
    (2, 33, 17, 11, 1 / 16, (7, 7), torch.float16, False),
    (1, 8, 3, 4, 1 / 16, (7, 7), torch.float32, True),
]


def make_case(case, seed):
    n, c, h, w, scale, size, dtype, channels_last = case
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = random_rois(gen, 20, n, h / scale, w / scale, scale, dtype)
    return x, rois, scale, size


def case_id(c):
    return f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-s{c[4]:.3g}-{c[5]}-{c[6]}-cl{int(c[7])}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_forward_output_and_argmax_are_bit_identical_to_torchvision(case):
    for seed in range(3):
        x, rois, scale, (ph, pw) = make_case(case, seed)
        out, arg = fastrcnn_pool(x, rois, scale, ph, pw)
        ref_out, ref_arg = torchvision_pool(x.contiguous(), rois, scale, ph, pw)
        assert out.shape == ref_out.shape and out.dtype == ref_out.dtype and arg.dtype == torch.int32
        assert torch.equal(arg, ref_arg)
        assert torch.equal(out, ref_out)


def test_the_baseline_simd_build_is_bit_identical_too(monkeypatch):
    monkeypatch.setenv("FASTRCNN_ROI_POOL_SIMD", "baseline")  # the x86-64 baseline code instead of AVX2
    for case in (CASES[1], CASES[3], CASES[5]):
        x, rois, scale, (ph, pw) = make_case(case, 21)
        out, arg = fastrcnn_pool(x, rois, scale, ph, pw)
        ref_out, ref_arg = torchvision_pool(x.contiguous(), rois, scale, ph, pw)
        assert torch.equal(arg, ref_arg) and torch.equal(out, ref_out)


@pytest.mark.parametrize("case", CASES[:6] + CASES[7:9], ids=lambda c: f"{c[1]}ch-{c[6]}")
def test_reference_is_bit_identical_to_torchvision(case):
    x, rois, scale, (ph, pw) = make_case(case, 11)
    out, arg = roi_pool_reference(x, rois, (ph, pw), scale)
    ref_out, ref_arg = torchvision_pool(x.contiguous(), rois, scale, ph, pw)
    assert torch.equal(arg, ref_arg)
    assert torch.equal(out, ref_out)


def test_vgg16_conv5_shape_matches_torchvision():
    from fastrcnn_cli.ops.bench import selective_search_like_rois

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 512, 38, 63, generator=gen)
    rois = selective_search_like_rois(300, seed=1)
    out, arg = fastrcnn_pool(x, rois, 1 / 16, 7, 7)
    ref_out, ref_arg = torchvision_pool(x, rois, 1 / 16, 7, 7)
    assert torch.equal(arg, ref_arg) and torch.equal(out, ref_out)


def test_rounding_is_half_away_from_zero():
    # x * 1/16 lands on .5: C's round goes away from zero (-0.5 -> -1, 2.5 -> 3), torch.round would go to even
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 2, 8, 8)
    rois = torch.tensor([[0, -8.0, -8.0, 40.0, 40.0], [0, 8.0, 24.0, 56.0, 88.0], [0, 40.0, 40.0, 104.0, 72.0]])
    for scale in (1 / 16, 1 / 8):
        out, arg = fastrcnn_pool(x, rois, scale, 3, 3)
        ref_out, ref_arg = torchvision_pool(x, rois, scale, 3, 3)
        assert torch.equal(arg, ref_arg) and torch.equal(out, ref_out)
        ref2, arg2 = roi_pool_reference(x, rois, (3, 3), scale)
        assert torch.equal(arg2, ref_arg) and torch.equal(ref2, ref_out)


def test_rois_outside_the_feature_map_give_zeros_and_argmax_minus_one():
    x = torch.randn(1, 4, 6, 6)
    rois = torch.tensor([[0, 500.0, 500.0, 900.0, 900.0], [0, -900.0, -900.0, -500.0, -500.0]])
    out, arg = fastrcnn_pool(x, rois, 1 / 16, 7, 7)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(arg, torch.full_like(arg, -1))


def test_empty_bins_of_a_partly_clipped_roi_are_zero():
    x = torch.rand(1, 2, 4, 4) + 1  # all positive: a zero can only come from an empty bin
    rois = torch.tensor([[0, 32.0, 32.0, 120.0, 120.0]])  # scaled: 2..7.5, the map ends at 4
    out, arg = fastrcnn_pool(x, rois, 1 / 16, 6, 6)
    ref_out, ref_arg = torchvision_pool(x, rois, 1 / 16, 6, 6)
    assert torch.equal(out, ref_out) and torch.equal(arg, ref_arg)
    assert (out == 0).any() and (arg == -1).any() and ((out == 0) == (arg == -1)).all()


def test_first_maximum_wins_ties():
    x = torch.ones(1, 40, 10, 10)  # every cell ties: the argmax is the first cell of each bin
    rois = torch.tensor([[0, 0.0, 0.0, 150.0, 150.0], [0, 17.0, 33.0, 90.0, 140.0]])
    out, arg = fastrcnn_pool(x, rois, 1 / 16, 7, 7)
    ref_out, ref_arg = torchvision_pool(x, rois, 1 / 16, 7, 7)
    assert torch.equal(arg, ref_arg) and torch.equal(out, ref_out)
    _, ref2 = roi_pool_reference(x, rois, (7, 7), 1 / 16)
    assert torch.equal(ref2, ref_arg)


def test_nan_never_wins_and_a_bin_of_nan_gives_minus_flt_max():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 35, 8, 8, generator=gen)
    x[torch.rand(x.shape, generator=gen) < 0.3] = float("nan")
    x[0, :, :2, :2] = float("nan")  # a bin made of NaN only
    x[0, 3, 4:, 4:] = float("-inf")
    rois = torch.tensor([[0, 0.0, 0.0, 127.0, 127.0], [0, 0.0, 0.0, 31.0, 31.0]])
    out, arg = fastrcnn_pool(x, rois, 1 / 16, 4, 4)
    ref_out, ref_arg = torchvision_pool(x, rois, 1 / 16, 4, 4)
    assert torch.equal(arg, ref_arg)
    assert torch.equal(out, ref_out)  # no NaN in either: NaN never wins
    assert not out.isnan().any()
    assert (out[1, :, 0, 0] == -FLT_MAX).all() and (arg[1, :, 0, 0] == -1).all()  # the second RoI's first bin
    ref2_out, ref2_arg = roi_pool_reference(x, rois, (4, 4), 1 / 16)
    assert torch.equal(ref2_arg, ref_arg) and torch.equal(ref2_out, ref_out)


def test_gradients_equal_torchvision():
    for case in (CASES[1], CASES[2], CASES[4], CASES[5]):
        x, rois, scale, (ph, pw) = make_case(case, 5)
        x = x.detach().requires_grad_(True)
        grad = torch.randn(rois.shape[0], x.shape[1], ph, pw, dtype=x.dtype)
        (ours,) = torch.autograd.grad(roi_pool(x, rois, (ph, pw), scale), x, grad)
        (theirs,) = torch.autograd.grad(torchvision.ops.roi_pool(x, rois, (ph, pw), scale), x, grad)
        # same additions in the same order per input cell: identical, not just close
        assert torch.equal(ours, theirs)
        x_ref = x.detach().requires_grad_(True)
        out_ref, _ = roi_pool_reference(x_ref, rois, (ph, pw), scale)
        (reference,) = torch.autograd.grad(out_ref, x_ref, grad)
        torch.testing.assert_close(reference, theirs)


def test_backward_accepts_non_contiguous_and_expanded_grads():
    x, rois, scale, (ph, pw) = make_case(CASES[1], 6)
    out, arg = fastrcnn_pool(x, rois, scale, ph, pw)
    n, c, h, w = x.shape
    grad = torch.randn(ph, pw, c, rois.shape[0]).permute(3, 2, 0, 1)  # strides of a transpose
    ours = torch.ops.fastrcnn.roi_pool_backward(grad, rois, arg, scale, ph, pw, n, c, h, w)
    theirs = torch.ops.torchvision._roi_pool_backward(grad, rois, arg, scale, ph, pw, n, c, h, w)
    assert torch.equal(ours, theirs)
    ones = torch.ones(()).expand_as(out)  # the gradient of out.sum(): all strides 0
    ours = torch.ops.fastrcnn.roi_pool_backward(ones, rois, arg, scale, ph, pw, n, c, h, w)
    theirs = torch.ops.torchvision._roi_pool_backward(ones, rois, arg, scale, ph, pw, n, c, h, w)
    assert torch.equal(ours, theirs)


def test_backward_is_deterministic_whatever_the_number_of_threads():
    x, rois, scale, (ph, pw) = make_case(CASES[3], 7)
    out, arg = fastrcnn_pool(x, rois, scale, ph, pw)
    grad = torch.randn_like(out)
    args = (grad, rois, arg, scale, ph, pw, *x.shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.fastrcnn.roi_pool_backward(*args)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.fastrcnn.roi_pool_backward(*args)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    assert torch.equal(one, roi_pool_backward_reference(grad, rois, arg, tuple(x.shape)))


def distinct_input(shape, seed):
    """float64 values at least 0.01 apart: no ties, so gradcheck's small perturbations never move an argmax."""
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    return (torch.randperm(n, generator=gen).double() * 0.01).view(shape)


def test_gradcheck_in_float64():
    x = distinct_input((2, 2, 6, 7), 0).requires_grad_(True)
    rois = torch.tensor([[0, 0.0, 0.0, 90.0, 80.0], [1, 8.0, 8.0, 60.0, 100.0], [1, -20.0, 30.0, 200.0, 200.0],
                         [0, 40.0, 20.0, 41.0, 22.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 4), 1 / 16), (x,))
    assert torch.autograd.gradgradcheck(lambda t: roi_pool(t, rois, (3, 4), 1 / 16), (x,), fast_mode=True)


def test_opcheck_passes_on_cpu():
    x = distinct_input((2, 5, 6, 7), 1).requires_grad_(True)
    rois = torch.tensor([[0, 0.0, 0.0, 90.0, 80.0], [1, 8.0, 8.0, 60.0, 100.0]], dtype=torch.float64)
    torch.library.opcheck(torch.ops.fastrcnn.roi_pool.default, (x, rois, 1 / 16, 3, 2))
    torch.library.opcheck(torch.ops.fastrcnn.roi_pool.default, (x.detach().float(), rois.float(), 1 / 8, 2, 2))
    _, arg = fastrcnn_pool(x.detach(), rois, 1 / 16, 3, 2)
    grad = torch.randn(2, 5, 3, 2, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.fastrcnn.roi_pool_backward.default, (grad, rois, arg, 1 / 16, 3, 2, 2, 5, 6, 7))


def test_zero_rois_give_an_empty_output_and_a_zero_gradient():
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    rois = torch.zeros(0, 5)
    out = roi_pool(x, rois, 7, 1 / 16)
    assert out.shape == (0, 6, 7, 7)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))
    ref, arg = roi_pool_reference(x, rois, (7, 7), 1 / 16)
    assert ref.shape == (0, 6, 7, 7) and arg.shape == (0, 6, 7, 7)


@pytest.mark.parametrize("bad", [2.0, -1.0, float("nan")])
def test_a_batch_index_out_of_range_raises_a_value_error(bad):
    x = torch.randn(2, 3, 5, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [bad, 0.0, 0.0, 10.0, 10.0]])
    with pytest.raises(ValueError, match="batch index"):
        roi_pool(x, rois, 2, 1.0)
    with pytest.raises(ValueError, match="batch index"):
        torch.ops.fastrcnn.roi_pool(x, rois, 1.0, 2, 2)
    with pytest.raises(ValueError, match="batch index"):
        roi_pool_reference(x, rois, (2, 2), 1.0)


def test_non_finite_roi_coordinates_raise_a_value_error():
    x = torch.randn(1, 3, 5, 5)
    rois = torch.tensor([[0, 0.0, float("nan"), 10.0, 10.0]])
    with pytest.raises(ValueError, match="non-finite"):
        torch.ops.fastrcnn.roi_pool(x, rois, 1.0, 2, 2)


def test_bad_arguments_raise_value_errors_with_clear_messages():
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_pool(x, torch.zeros(3, 4), 2, 1.0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        roi_pool(x[0], torch.zeros(1, 5), 2, 1.0)
    with pytest.raises(ValueError, match="output_size"):
        roi_pool(x, torch.zeros(1, 5), 0, 1.0)
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_pool(x, torch.zeros(1, 5), 2, -1.0)
    with pytest.raises(ValueError, match="same dtype"):
        torch.ops.fastrcnn.roi_pool(x, torch.zeros(1, 5, dtype=torch.float64), 1.0, 2, 2)


def test_a_list_of_boxes_per_image_equals_the_k_by_5_form():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 8, 12, 12, generator=gen)
    boxes = [torch.rand(4, 2, generator=gen).repeat(1, 2) * 100 + torch.tensor([0, 0, 40, 30]) for _ in range(3)]
    rois = rois_from_boxes(boxes)
    assert rois.shape == (12, 5) and torch.equal(rois[:, 0], torch.arange(3).repeat_interleave(4).float())
    assert torch.equal(roi_pool(x, boxes, (7, 7), 1 / 8), roi_pool(x, rois, (7, 7), 1 / 8))
    assert torch.equal(roi_pool(x, boxes, 7, 1 / 8), torchvision.ops.roi_pool(x, boxes, 7, 1 / 8))


def test_the_module_pools_like_the_function():
    x, rois, scale, size = make_case(CASES[1], 9)
    layer = RoIPool(size, scale)
    assert "output_size=(7, 7)" in repr(layer)
    assert torch.equal(layer(x, rois), roi_pool(x, rois, size, scale))


def test_rois_are_converted_to_the_input_dtype():
    x, rois, scale, (ph, pw) = make_case(CASES[4], 4)  # float64 input
    assert torch.equal(roi_pool(x, rois.float(), (ph, pw), scale), fastrcnn_pool(x, rois, scale, ph, pw)[0])


def test_meta_tensors_give_shapes_without_computing():
    x = torch.empty(2, 16, 38, 63, device="meta")
    rois = torch.empty(300, 5, device="meta")
    out, arg = torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 7, 7)
    assert out.shape == (300, 16, 7, 7) and out.device.type == "meta" and arg.dtype == torch.int32
    grad = torch.ops.fastrcnn.roi_pool_backward(out, rois, arg, 1 / 16, 7, 7, 2, 16, 38, 63)
    assert grad.shape == (2, 16, 38, 63)


def test_large_outputs_are_correct_and_their_memory_is_reused():
    # 200 RoIs x 512 channels x 49 bins: 20 MB of output, above the block cache's threshold
    x = torch.randn(1, 512, 20, 30)
    rois = random_rois(torch.Generator().manual_seed(8), 60, 1, 320, 480, 1 / 16)[:200]
    ref_out, ref_arg = torchvision_pool(x, rois, 1 / 16, 7, 7)
    for _ in range(3):
        out, arg = fastrcnn_pool(x, rois, 1 / 16, 7, 7)
        assert torch.equal(out, ref_out) and torch.equal(arg, ref_arg)
        del out, arg


def test_half_and_bfloat16_work_on_the_cpu():
    x, rois, scale, (ph, pw) = make_case(CASES[1], 12)
    for dtype in (torch.float16, torch.bfloat16):
        xs, rs = x.to(dtype), rois.to(dtype)
        out, arg = fastrcnn_pool(xs, rs, scale, ph, pw)
        ref_out, ref_arg = roi_pool_reference(xs, rs, (ph, pw), scale)
        assert torch.equal(out, ref_out) and torch.equal(arg, ref_arg)
        # the backward adds in float32 and rounds once: within one rounding of the exact sum
        grad = torch.randn(out.shape).to(dtype)
        got = torch.ops.fastrcnn.roi_pool_backward(grad, rs, arg, scale, ph, pw, *xs.shape)
        exact = roi_pool_backward_reference(grad.double(), rs, arg, tuple(xs.shape))
        tol = {torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), exact, rtol=tol, atol=tol)


def test_falls_back_to_the_reference_with_a_warning_when_the_build_fails(monkeypatch, capsys):
    x, rois, scale, size = make_case(CASES[2], 13)
    expected = roi_pool(x, rois, size, scale)
    monkeypatch.setattr(_extension, "_state", _extension.ExtensionState())  # as if nothing were loaded
    monkeypatch.setattr(_extension, "_warned", set())

    def broken(*args, **kwargs):
        raise BuildError("could not build the native RoI pooling operator (simulated)")

    monkeypatch.setattr(_extension, "_build_and_load", broken)
    got = roi_pool(x, rois, size, scale)
    assert torch.equal(got, expected)
    assert "simulated" in capsys.readouterr().err


def test_a_missing_compiler_is_a_build_error_that_says_so(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(BuildError, match="no C\\+\\+ compiler"):
        _extension._check_tools(_extension._cpp_extension())


@pytest.mark.slow
def test_torch_compile_traces_the_operator_without_graph_breaks():
    x, rois, scale, size = make_case(CASES[1], 14)
    x = x.requires_grad_(True)

    def head(features, boxes):
        return roi_pool(features, boxes, size, scale).relu().sum(dim=(2, 3))

    compiled = torch.compile(head, fullgraph=True, dynamic=False)
    out = compiled(x, rois)
    torch.testing.assert_close(out, head(x, rois))  # inductor may sum in another order
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(head(x, rois).sum(), x)
    torch.testing.assert_close(grad, expected)


def test_a_first_call_inside_torch_compile_loads_the_operator_without_a_graph_break():
    # a fresh process, so the library is not loaded yet when dynamo traces the first call
    import subprocess
    import sys

    code = (
        "import torch, torchvision\n"
        "from fastrcnn_cli.ops import _extension, roi_pool\n"
        "assert not _extension._state.cpu\n"
        "x = torch.randn(2, 8, 10, 12)\n"
        "rois = torch.tensor([[0, 0., 0., 100., 90.], [1, 16., 8., 150., 120.]])\n"
        "f = torch.compile(lambda x, r: roi_pool(x, r, 7, 1 / 16), fullgraph=True, backend='eager')\n"
        "assert torch.equal(f(x, rois), torch.ops.torchvision.roi_pool(x, rois, 1 / 16, 7, 7)[0])\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize(
    "row", [[2.0, 0.0, 0.0, 10.0, 10.0], [-1.0, 0.0, 0.0, 10.0, 10.0], [0.0, 1.0, float("inf"), 3.0, 4.5]]
)
def test_the_python_roi_check_raises_the_operators_message(row):
    # roi_pool() runs this check itself before the CUDA operator; its message is the C++ operator's
    from fastrcnn_cli.ops import check_rois

    x = torch.randn(2, 3, 5, 5)
    rois = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [1, 2.0, 2.0, 8.0, 9.0], row])
    with pytest.raises(ValueError) as ours:
        check_rois(rois, 2, 1 / 16)
    with pytest.raises(ValueError) as native:
        torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 2, 2)
    assert str(ours.value) == str(native.value).splitlines()[0]
    check_rois(rois[:2], 2, 1 / 16)  # good RoIs pass
    check_rois(rois[:0], 2, 1 / 16)


def test_low_precision_features_with_float32_rois_place_the_bins_in_float32():
    """Mixed precision: bfloat16 features, float32 boxes. The bins follow the float32 boxes (bfloat16 would move
    a corner of 803 to 804, another cell at scale 1) and the values are the features' own."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 5, 130, 900, generator=gen)
    rois = torch.tensor([[0, 803.0, 17.0, 861.0, 117.0], [0, 3.0, 5.0, 201.0, 99.0]])
    for dtype in (torch.bfloat16, torch.float16):
        low = x.to(dtype)
        out = roi_pool(low, rois, 3, 1.0)
        assert out.dtype == dtype
        expected = roi_pool(low.float(), rois, 3, 1.0).to(dtype)
        assert torch.equal(out, expected)
    # in bfloat16 the boxes themselves would round (803 -> 804): another window, other values
    coarse = roi_pool(x.bfloat16(), rois.bfloat16(), 3, 1.0)
    assert not torch.equal(coarse, roi_pool(x.bfloat16(), rois, 3, 1.0))
