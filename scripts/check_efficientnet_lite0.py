"""Show that our EfficientNet-Lite0 with the packaged ImageNet weights classifies real photos sensibly,
and that the padding, batch-norm epsilon and preprocessing we chose are the ones that fit the weights.

Runs the full classifier (stem, 16 MBConv blocks, ``_conv_head``, ``_fc``; 1000 classes, 224 x 224) on the
five PASCAL VOC 2007 samples and a few raccoon photos from ``../shared``, prints the top-5 ImageNet classes
of the reference configuration, then compares variants: symmetric padding instead of TensorFlow's 'SAME',
PyTorch's batch-norm epsilon 1e-5 instead of 1e-3, torchvision's ImageNet normalisation instead of
(x - 127) / 128, BGR instead of RGB, and the stride-16 dilated network used by the ``dilated`` backbone cut.

    python scripts/check_efficientnet_lite0.py [--shared ../shared] [--raccoons 6]

Eval preprocessing as in tensorflow/tpu's EfficientNet: centre crop of 224 / (224 + 32) of the shorter side,
bicubic resize to 224 x 224.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastrcnn_cli.io import read_image  # noqa: E402
from fastrcnn_cli.model.backbones import (  # noqa: E402
    EFFICIENTNET_LITE,
    TORCHVISION_IMAGENET,
    EfficientNetLite0,
    Preprocessing,
    load_efficientnet_lite0_state_dict,
)

IMAGE_SIZE = 224
CROP_PADDING = 32

#: ImageNet has no raccoon class; these are the look-alikes (mustelids, foxes, pandas, small cats, ...)
RACCOON_LIKE = (
    "badger", "polecat", "weasel", "mink", "black-footed ferret", "otter", "skunk", "lesser panda", "giant panda",
    "marmot", "beaver", "grey fox", "kit fox", "red fox", "Arctic fox", "Madagascar cat", "indri", "meerkat",
    "mongoose", "tabby", "tiger cat", "Egyptian cat", "koala", "wombat", "fox squirrel", "porcupine",
)
#: ImageNet classes 0 .. 397 are animals (tench .. puffer)
ANIMAL_CLASSES = range(0, 398)


@dataclass(frozen=True)
class Variant:
    name: str
    padding: str = "tf-same"
    bn_eps: float = 1e-3
    preprocessing: Preprocessing = EFFICIENTNET_LITE
    output_stride: int = 32


VARIANTS = (
    Variant("reference: TF 'SAME', eps 1e-3, RGB (x-127)/128"),
    Variant("symmetric padding", padding="symmetric"),
    Variant("batch-norm eps 1e-5", bn_eps=1e-5),
    Variant("symmetric padding + eps 1e-5", padding="symmetric", bn_eps=1e-5),
    Variant("torchvision ImageNet mean/std", preprocessing=TORCHVISION_IMAGENET),
    Variant("BGR input", preprocessing=Preprocessing("BGR", (127.0,) * 3, (128.0,) * 3)),
    Variant("dilated, output stride 16 (backbone cut 'dilated')", output_stride=16),
)


def center_crop_resize(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    crop = int(round(size / (size + CROP_PADDING) * min(h, w)))
    top, left = (h - crop + 1) // 2, (w - crop + 1) // 2
    return cv2.resize(image[top:top + crop, left:left + crop], (size, size), interpolation=cv2.INTER_CUBIC)


class BatchNormFit:
    """How well the activations entering each batch norm match the ImageNet statistics stored in it.

    A label-free check: with the right preprocessing, padding and epsilon, natural photos should give each
    channel about the stored moving mean and variance. Per layer: the mean over channels of
    |mean - running_mean| / sqrt(running_var + 1e-3) and of |log((var + 1e-3) / (running_var + 1e-3))|;
    :meth:`summary` averages them over the 49 batch-norm layers.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        self.bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.shift: list[float] = []
        self.log_var: list[float] = []
        self.handles: list = []

    def __enter__(self) -> BatchNormFit:
        for bn in self.bns:
            self.handles.append(bn.register_forward_pre_hook(self._hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()

    def _hook(self, bn: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0]
        mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
        scale = (bn.running_var + 1e-3).sqrt()
        self.shift.append(((mean - bn.running_mean).abs() / scale).mean().item())
        self.log_var.append(((var + 1e-3) / (bn.running_var + 1e-3)).log().abs().mean().item())

    def summary(self) -> tuple[float, float]:
        return float(np.mean(self.shift)), float(np.mean(self.log_var))


def find_images(shared: Path, raccoons: int) -> list[Path]:
    voc = sorted((shared / "reference" / "voc2007-samples").glob("*.jpg"))
    racc = sorted((shared / "datasets" / "raccoon" / "JPEGImages").glob("*.jpg"),
                  key=lambda p: int(p.stem.split("-")[-1]) if p.stem.split("-")[-1].isdigit() else 0)
    return voc + racc[:raccoons]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--raccoons", type=int, default=12, help="how many raccoon photos (default 12)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    paths = find_images(args.shared, args.raccoons)
    if not paths:
        print(f"no images under {args.shared}", file=sys.stderr)
        return 1
    crops = [center_crop_resize(read_image(p)) for p in paths]
    state = load_efficientnet_lite0_state_dict()

    probs: dict[str, torch.Tensor] = {}
    bn_fit: dict[str, tuple[float, float]] = {}
    for v in VARIANTS:
        net = EfficientNetLite0(padding=v.padding, bn_eps=v.bn_eps, output_stride=v.output_stride)
        net.load_state_dict(state, strict=True)
        net.eval()
        batch = torch.stack([v.preprocessing.image_to_tensor(c) for c in crops])
        with torch.no_grad(), BatchNormFit(net) as fit:
            probs[v.name] = net(batch).softmax(1)
        bn_fit[v.name] = fit.summary()

    ref = probs[VARIANTS[0].name]
    print(f"Top-5 ImageNet classes, {VARIANTS[0].name}:")
    for path, p in zip(paths, ref):
        top = p.topk(5)
        labels = ", ".join(f"{categories[i]} {q:.2f}" for q, i in zip(top.values.tolist(), top.indices.tolist()))
        print(f"  {path.name:16s} {labels}")

    racc = torch.tensor(["raccoon" in p.name for p in paths])
    like = torch.tensor([categories.index(c) for c in RACCOON_LIKE])
    animals = torch.tensor(list(ANIMAL_CLASSES))
    print(f"\nVariants over {len(paths)} images ({int(racc.sum())} raccoon photos). top-1 prob, entropy: mean over all "
          "images; raccoon-like / animal: mean probability mass on raccoon look-alike / animal classes, raccoon "
          "photos only; same top-1 and KL(reference || variant): against the reference.")
    print("  BN shift / BN |log var|: how far the activations entering the 49 batch norms are from the stored ImageNet "
          "statistics (lower = the weights see the inputs they were trained on).")
    print(f"  {'variant':52s} {'top-1 p':>7s} {'entropy':>7s} {'racc-like':>9s} {'animal':>6s} {'same top-1':>10s} "
          f"{'KL':>6s} {'BN shift':>8s} {'BN |log var|':>12s}")
    ref_top1 = ref.argmax(1)
    for v in VARIANTS:
        p = probs[v.name]
        top1 = p.max(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean().item()
        kl = (ref * (ref.clamp_min(1e-12).log() - p.clamp_min(1e-12).log())).sum(1).mean().item()
        same = (top1.indices == ref_top1).sum().item()
        like_mass = p[racc][:, like].sum(1).mean().item()
        animal_mass = p[racc][:, animals].sum(1).mean().item()
        print(f"  {v.name:52s} {top1.values.mean().item():7.3f} {entropy:7.3f} {like_mass:9.3f} {animal_mass:6.3f} "
              f"{same:>5d}/{len(paths):<4d} {kl:6.3f} {bn_fit[v.name][0]:8.3f} {bn_fit[v.name][1]:12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
