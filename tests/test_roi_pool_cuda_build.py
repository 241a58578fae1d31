"""The CUDA RoI pooling operator: it compiles (here, with no GPU) and loads; with a GPU, it matches torchvision.

The first run compiles the CUDA library (about a minute on a 2-core machine; cached afterwards).
"""

from __future__ import annotations

import pytest
import torch

from fastrcnn_cli.errors import BuildError
from fastrcnn_cli.ops import _extension, load_extension, roi_pool, roi_pool_reference

needs_toolkit = pytest.mark.skipif(
    _extension.cuda_build_problem() is not None, reason=f"no CUDA build possible: {_extension.cuda_build_problem()}"
)
def needs_gpu(test):
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")(test))


@pytest.fixture(scope="module")
def cuda_ops():
    try:
        return load_extension(with_cuda=True)
    except BuildError as exc:
        pytest.fail(f"the CUDA RoI pooling operator did not build: {exc}")


@needs_toolkit
def test_the_cuda_kernels_compile_and_register_for_the_cuda_dispatch_key(cuda_ops):
    assert cuda_ops.cuda
    for op in ("fastrcnn::roi_pool", "fastrcnn::roi_pool_backward"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")


def test_a_missing_toolkit_is_reported_before_compiling(monkeypatch):
    monkeypatch.setattr(_extension, "find_cuda_home", lambda: None)
    monkeypatch.setattr(_extension, "_state", _extension.ExtensionState(cpu=True))
    if torch.version.cuda is None:
        expected = "not built with CUDA"
    else:
        expected = "no CUDA toolkit"
    with pytest.raises(BuildError, match=expected):
        _extension._load_cuda()


# ---- with a GPU: numbers ----------------------------------------------------------------------------------


def gpu_case(seed, dtype, channels_last=False, n=2, c=67, h=21, w=33, k=150):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen)
    x1 = torch.rand(k, generator=gen) * w * 16
    y1 = torch.rand(k, generator=gen) * h * 16
    size = torch.rand(k, 2, generator=gen) * 300
    half = (torch.randint(-2, 40, (k, 2), generator=gen) + 0.5) * 16  # corners on .5 after scaling
    boxes = torch.stack([x1, y1, x1 + size[:, 0], y1 + size[:, 1]], 1)
    boxes[: k // 3, :2] = half[: k // 3]
    boxes[-3:] = torch.tensor([[-100.0, -100.0, 50.0, 50.0], [9000.0, 9000.0, 9500.0, 9600.0], [30.0, 30.0, 10.0, 5.0]])
    rois = torch.cat([torch.randint(0, n, (k, 1), generator=gen).float(), boxes], 1)
    x = x.to("cuda", dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, rois.to("cuda", dtype)


@needs_toolkit
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_forward_is_bit_identical_to_torchvision(cuda_ops, dtype, channels_last):
    torchvision = pytest.importorskip("torchvision")
    for seed in range(3):
        x, rois = gpu_case(seed, dtype, channels_last)
        for scale, size in ((1 / 16, 7), (1 / 8, 6)):
            out, arg = torch.ops.fastrcnn.roi_pool(x, rois, scale, size, size)
            try:
                ref_out, ref_arg = torch.ops.torchvision.roi_pool(x.contiguous(), rois, scale, size, size)
            except RuntimeError:  # a torchvision without this dtype on CUDA: the reference decides
                ref_out, ref_arg = roi_pool_reference(x, rois, (size, size), scale)
            assert torch.equal(arg, ref_arg)
            assert torch.equal(out, ref_out)
    del torchvision


@needs_toolkit
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_cuda_matches_the_cpu_and_the_reference(cuda_ops, dtype):
    x, rois = gpu_case(4, dtype)
    out, arg = torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 7, 7)
    ref_out, ref_arg = roi_pool_reference(x, rois, (7, 7), 1 / 16)
    assert torch.equal(arg, ref_arg) and torch.equal(out, ref_out)


@needs_toolkit
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_cuda_gradients_match_torchvision(cuda_ops, dtype):
    torchvision = pytest.importorskip("torchvision")
    x, rois = gpu_case(5, dtype)
    x.requires_grad_(True)
    grad = torch.randn(rois.shape[0], x.shape[1], 7, 7, device="cuda").to(dtype)
    (ours,) = torch.autograd.grad(roi_pool(x, rois, 7, 1 / 16), x, grad)
    try:
        (theirs,) = torch.autograd.grad(torchvision.ops.roi_pool(x, rois, 7, 1 / 16), x, grad)
    except RuntimeError:
        pytest.skip(f"torchvision has no CUDA roi_pool for {dtype}")
    tol = {torch.float16: (2e-2, 2e-2)}.get(dtype, (1e-5, 1e-6))
    torch.testing.assert_close(ours, theirs, rtol=tol[0], atol=tol[1])


@needs_toolkit
@needs_gpu
def test_cuda_bad_batch_index_raises_a_value_error(cuda_ops):
    x, rois = gpu_case(6, torch.float32)
    rois[3, 0] = x.shape[0]
    with pytest.raises(ValueError, match="batch index"):
        torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 7, 7)


@needs_toolkit
@needs_gpu
def test_opcheck_passes_on_cuda(cuda_ops):
    gen = torch.Generator().manual_seed(7)
    x = (torch.randperm(2 * 4 * 6 * 7, generator=gen).double() * 0.01).view(2, 4, 6, 7).cuda().requires_grad_(True)
    rois = torch.tensor([[0, 0.0, 0.0, 90.0, 80.0], [1, 8.0, 8.0, 60.0, 100.0]], dtype=torch.float64, device="cuda")
    torch.library.opcheck(torch.ops.fastrcnn.roi_pool.default, (x, rois, 1 / 16, 3, 2))
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 2), 1 / 16), (x,))


@needs_toolkit
@needs_gpu
def test_zero_rois_on_cuda(cuda_ops):
    x = torch.randn(1, 8, 5, 5, device="cuda", requires_grad=True)
    out = roi_pool(x, torch.zeros(0, 5, device="cuda"), 7, 1 / 16)
    assert out.shape == (0, 8, 7, 7)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(grad, torch.zeros_like(x))


@needs_toolkit
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_inference_form_is_the_forward_without_argmax(cuda_ops, dtype, channels_last):
    """roi_pool_inference (no argmax kept or written) gives the training forward's values, bit for bit."""
    for seed in range(3):
        x, rois = gpu_case(10 + seed, dtype, channels_last)
        out, _ = torch.ops.fastrcnn.roi_pool(x, rois, 1 / 16, 7, 7)
        lean = torch.ops.fastrcnn.roi_pool_inference(x, rois, 1 / 16, 7, 7)
        assert torch.equal(out.view(torch.uint8), lean.view(torch.uint8))
        with torch.no_grad():  # and roi_pool picks it under no_grad
            assert torch.equal(roi_pool(x, rois, 7, 1 / 16), out)


@needs_toolkit
@needs_gpu
def test_cuda_inference_form_with_bad_rois_stays_in_bounds(cuda_ops):
    """The inference form skips the synchronising check: whatever a RoI holds (NaN, inf, huge, a batch index
    naming no image), the kernel reads only inside the input and the process goes on. A RoI naming no image
    pools zeros; the checked entry points still refuse such RoIs with a ValueError."""
    x = torch.randn(2, 40, 9, 13, device="cuda")
    nan, inf = float("nan"), float("inf")
    bad = torch.tensor(
        [[0, nan, 0.0, 50.0, 50.0], [1, 0.0, 0.0, inf, inf], [0, -inf, -inf, 40.0, 40.0],
         [1, -1e30, -1e30, 1e30, 1e30], [5, 0.0, 0.0, 60.0, 60.0], [-3, 0.0, 0.0, 60.0, 60.0],
         [nan, 0.0, 0.0, 60.0, 60.0], [0, 5e9, 5e9, 6e9, 6e9], [1, 100.0, 90.0, 10.0, 5.0]],
        device="cuda",
    )
    good = torch.tensor([[0, 10.0, 10.0, 120.0, 100.0]], device="cuda")
    out = torch.ops.fastrcnn.roi_pool_inference(x, torch.cat([bad, good]), 1 / 16, 7, 7)
    torch.cuda.synchronize()
    assert out.shape == (10, 40, 7, 7)
    assert torch.equal(out[4], torch.zeros_like(out[4])) and torch.equal(out[5], torch.zeros_like(out[5]))
    assert torch.isfinite(out).all()  # every value is an input value or an empty bin's 0
    ref, _ = torch.ops.fastrcnn.roi_pool(x, good, 1 / 16, 7, 7)
    assert torch.equal(out[-1], ref[0])  # the good RoI beside them is untouched
    for k in range(bad.shape[0] - 1):  # the last one is only malformed (forced to 1 x 1), not bad
        with pytest.raises(ValueError, match=r"rois\[0"):
            roi_pool(x, bad[k : k + 1], 7, 1 / 16)
        with pytest.raises(ValueError, match=r"rois\[0"):
            torch.ops.fastrcnn.roi_pool(x, bad[k : k + 1], 1 / 16, 7, 7)
    assert torch.isfinite(torch.ops.fastrcnn.roi_pool(x, good, 1 / 16, 7, 7)[0]).all()  # the context still works


@needs_toolkit
@needs_gpu
def test_cuda_inference_form_replays_in_a_cuda_graph(cuda_ops):
    """No synchronisation inside the inference form: it can be captured in a CUDA graph and replayed on new
    data; the training forward's check is skipped while capturing."""
    x, rois = gpu_case(20, torch.float32)
    static_x = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        for _ in range(2):
            roi_pool(static_x, rois, 7, 1 / 16)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = torch.ops.fastrcnn.roi_pool_inference(static_x, rois, 1 / 16, 7, 7)
        static_fwd, _ = torch.ops.fastrcnn.roi_pool(static_x, rois, 1 / 16, 7, 7)
    for seed in range(3):
        fresh, _ = gpu_case(30 + seed, torch.float32)
        static_x.copy_(fresh)
        graph.replay()
        eager, _ = torch.ops.fastrcnn.roi_pool(fresh, rois, 1 / 16, 7, 7)
        assert torch.equal(static_out, eager) and torch.equal(static_fwd, eager)


@needs_toolkit
@needs_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_pools_low_precision_features_on_float32_boxes(cuda_ops, dtype):
    """Under autocast the backbone's features are bfloat16/float16 while the boxes stay float32: the bins are
    placed in float32, forward and backward."""
    x, rois = gpu_case(40, torch.float32)
    low = x.to(dtype).requires_grad_(True)
    out = roi_pool(low, rois, 7, 1 / 16)
    assert out.dtype == dtype
    exact = x.to(dtype).float().requires_grad_(True)
    ref = roi_pool(exact, rois, 7, 1 / 16)
    assert torch.equal(out.float(), ref)
    grad = torch.randn_like(ref).to(dtype)
    (g_low,) = torch.autograd.grad(out, low, grad)
    (g_ref,) = torch.autograd.grad(ref, exact, grad.float())
    torch.testing.assert_close(g_low.float(), g_ref, rtol=1e-2, atol=1e-2)
