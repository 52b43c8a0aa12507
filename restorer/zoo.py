"""Every published model variant: the single source of truth for the CLI, the app and the tests.

A variant is one set of weights for one architecture at one scale. Its ``network_g`` is the
mapping from the official BasicSR option file, unchanged, so ``build_network(entry.network_g)``
reproduces the official network and its checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class ZooEntry:
    """One model variant at one scale.

    ``model`` is the command-line name (lower case, e.g. ``hat-s``); the task fixes ``scale``.
    ``window_multiple`` is the size multiple the network needs (the engine pads to it);
    ``weight_file`` is the official file name, looked up in the weights folders.
    """

    model: str
    display_name: str
    arch: str
    scale: int
    network_g: Mapping[str, Any]
    weight_file: str
    param_key: str
    published: str
    paper: str
    url: str | None = None
    sha256: str | None = None
    window_multiple: int = 1
    in_channels: int = 3
    out_channels: int = 3
    supports_fp16: bool = False
    supports_bf16: bool = True
    padding: str = "reflect pad (bottom/right) to the window multiple only when needed (BasicSR test path)"
    notes: str = ""
    license: str = ""
    tasks: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.model}@x{self.scale}"

    def network_options(self) -> dict[str, Any]:
        """A fresh, mutable copy of ``network_g`` (with ``type``)."""
        return _thaw(self.network_g)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# HAT (Chen et al., "Activating More Pixels in Image Super-Resolution Transformer", CVPR 2023)
# network_g values from XPixelGroup/HAT options/test/*.yml
# ----------------------------------------------------------------------------------------------
HAT_PAPER = "https://arxiv.org/abs/2205.04437"
HAT_WEIGHTS_PAGE = (
    "the HAT README (https://github.com/XPixelGroup/HAT#how-to-test): Google Drive folder "
    "https://drive.google.com/drive/folders/1HpmReFfoUqUbnAOQ7rvOeNU3uf_m69w0 or Baidu Netdisk "
    "https://pan.baidu.com/s/1u2r4Lc2_EEeQqra2-w85Xg (code qyrl)"
)
_HAT_COMMON: dict[str, Any] = {
    "type": "HAT",
    "in_chans": 3,
    "img_size": 64,
    "window_size": 16,
    "compress_ratio": 3,
    "squeeze_factor": 30,
    "conv_scale": 0.01,
    "overlap_ratio": 0.5,
    "img_range": 1.0,
    "depths": [6, 6, 6, 6, 6, 6],
    "embed_dim": 180,
    "num_heads": [6, 6, 6, 6, 6, 6],
    "mlp_ratio": 2,
    "upsampler": "pixelshuffle",
    "resi_connection": "1conv",
}
_HAT_CONFIGS: dict[str, dict[str, Any]] = {
    "HAT-S": {**_HAT_COMMON, "embed_dim": 144, "compress_ratio": 24, "squeeze_factor": 24},
    "HAT": dict(_HAT_COMMON),
    "HAT-L": {**_HAT_COMMON, "depths": [6] * 12, "num_heads": [6] * 12},
}


def _hat(
    model: str,
    display: str,
    config: str,
    scale: int,
    weight_file: str,
    tasks: tuple[str, ...],
    notes: str = "",
) -> ZooEntry:
    return ZooEntry(
        model=model,
        display_name=display,
        arch="HAT",
        scale=scale,
        network_g=_freeze({**_HAT_CONFIGS[config], "upscale": scale}),
        weight_file=weight_file,
        param_key="params_ema",
        published=HAT_WEIGHTS_PAGE,
        paper=HAT_PAPER,
        window_multiple=16,
        supports_fp16=False,  # transformers give black blotches in fp16 (spandrel, HAT#127)
        supports_bf16=True,
        notes=notes,
        license="Apache-2.0 (code); weights per the HAT README",
        tasks=tasks,
    )


def _sr_task(scale: int) -> tuple[str, ...]:
    return (f"sr_x{scale}",)


_ENTRIES: list[ZooEntry] = []
for _s in (2, 3, 4):
    _ENTRIES += [
        _hat("hat-s", "HAT-S", "HAT-S", _s, f"HAT-S_SRx{_s}.pth", _sr_task(_s)),
        _hat("hat", "HAT", "HAT", _s, f"HAT_SRx{_s}.pth", _sr_task(_s), notes="trained on DF2K"),
        _hat(
            "hat-imagenet",
            "HAT (ImageNet pre-trained)",
            "HAT",
            _s,
            f"HAT_SRx{_s}_ImageNet-pretrain.pth",
            _sr_task(_s),
            notes="HAT-dagger in the paper: ImageNet pre-training, DF2K fine-tuning",
        ),
        _hat(
            "hat-l",
            "HAT-L",
            "HAT-L",
            _s,
            f"HAT-L_SRx{_s}_ImageNet-pretrain.pth",
            _sr_task(_s),
            notes="only released with ImageNet pre-training",
        ),
    ]
_ENTRIES += [
    _hat(
        "real-hat-gan",
        "Real-HAT-GAN",
        "HAT",
        4,
        "Real_HAT_GAN_SRx4.pth",
        ("real_sr_x4",),
        notes="real-world degradations, GAN-trained, better fidelity",
    ),
    _hat(
        "real-hat-gan-sharper",
        "Real-HAT-GAN (sharper)",
        "HAT",
        4,
        "Real_HAT_GAN_SRx4_sharper.pth",
        ("real_sr_x4",),
        notes="trained with unsharp-masked ground truth: sharper, less faithful",
    ),
]

ZOO: Mapping[str, ZooEntry] = MappingProxyType({e.key: e for e in _ENTRIES})


def entries(arch: str | None = None, task: str | None = None) -> list[ZooEntry]:
    """All zoo entries, optionally filtered by architecture type or task."""
    out: Iterable[ZooEntry] = ZOO.values()
    if arch is not None:
        out = (e for e in out if e.arch == arch)
    if task is not None:
        out = (e for e in out if task in e.tasks)
    return list(out)


def model_names() -> list[str]:
    """Distinct command-line model names, in zoo order."""
    return list(dict.fromkeys(e.model for e in ZOO.values()))


def get_entry(model: str, scale: int) -> ZooEntry:
    """The entry for a command-line model name at a scale; KeyError when there is none."""
    return ZOO[f"{model.lower()}@x{scale}"]
