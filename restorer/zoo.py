"""Every published model variant: the single source of truth for the CLI, the app and the tests.

A variant is one set of weights for one architecture at one scale. Its ``network_g`` is the
mapping from the official BasicSR option file, unchanged, so ``build_network(entry.network_g)``
reproduces the official network and its checkpoint loads with ``strict=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
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
    pad_mode: str = "reflect"
    tile_overlap: int | None = None  # default --tile-overlap (None: the engine's, two windows)
    cpu_tile: int | None = None  # default tile on a CPU (None: the engine's auto size)
    notes: str = ""
    license: str = ""
    tasks: tuple[str, ...] = field(default=())

    @property
    def padding(self) -> str:
        """How a whole image is padded to the window multiple, in words."""
        return PAD_MODES[self.pad_mode]

    @property
    def key(self) -> str:
        return f"{self.model}@x{self.scale}"

    def network_options(self) -> dict[str, Any]:
        """A fresh, mutable copy of ``network_g`` (with ``type``)."""
        return _thaw(self.network_g)


PAD_MODES = {
    "reflect": "reflect pad (bottom/right) to the window multiple only when needed (BasicSR test path)",
    "symmetric_always": "always add 1..window rows/columns of flipped (symmetric) padding, as the official "
    "inference script does",
}


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


def _entry_in(entries: Iterable[ZooEntry], model: str, scale: int) -> ZooEntry:
    """The entry of ``model`` at ``scale`` among those defined so far (for variants derived from it)."""
    return next(e for e in entries if e.model == model and e.scale == scale)


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

# ----------------------------------------------------------------------------------------------
# DRCT (Hsu et al., "DRCT: Saving Image Super-resolution away from Information Bottleneck",
# CVPRW 2024). network_g from ming053l/DRCT options/test/*.yml; gc = 32 (constructor default).
# compress_ratio / squeeze_factor / conv_scale / overlap_ratio are in the official files but unused.
# ----------------------------------------------------------------------------------------------
DRCT_PAPER = "https://arxiv.org/abs/2404.00722"
DRCT_WEIGHTS_PAGE = (
    "the DRCT README (https://github.com/ming053l/DRCT): Google Drive folder "
    "https://drive.google.com/drive/folders/1QJHdSfo-0eFNb96i8qzMJAPw31u9qZ7U"
)
REAL_DRCT_WEIGHTS_PAGE = (
    "the DRCT README (https://github.com/ming053l/DRCT), Real-DRCT-GAN folder "
    "https://drive.google.com/drive/folders/1emyaw6aQvhFgFC_RjK1Qo9c1sTRr-avk"
)
# DRCT's option files were copied from HAT's: the same network_g apart from the type.
_DRCT_COMMON: dict[str, Any] = {**_HAT_COMMON, "type": "DRCT"}
_DRCT_CONFIGS: dict[str, dict[str, Any]] = {
    "DRCT": dict(_DRCT_COMMON),
    "DRCT-L": {**_DRCT_COMMON, "depths": [6] * 12, "num_heads": [6] * 12},
}


def _drct(
    model: str,
    display: str,
    config: str,
    scale: int,
    weight_file: str,
    tasks: tuple[str, ...],
    notes: str = "",
    published: str = DRCT_WEIGHTS_PAGE,
) -> ZooEntry:
    return ZooEntry(
        model=model,
        display_name=display,
        arch="DRCT",
        scale=scale,
        network_g=_freeze({**_DRCT_CONFIGS[config], "upscale": scale}),
        weight_file=weight_file,
        # test YAMLs read params_ema; the inference scripts read params (raw weights, not the published)
        param_key="params_ema",
        published=published,
        paper=DRCT_PAPER,
        window_multiple=16,
        supports_fp16=False,  # the authors run fp32 only (DRCT#14); spandrel marks it unsafe in fp16
        supports_bf16=True,
        notes=notes,
        license="MIT (code); weights per the DRCT README",
        tasks=tasks,
    )


for _s in (2, 3, 4):
    _ENTRIES += [
        _drct("drct", "DRCT", "DRCT", _s, f"DRCT_SRx{_s}.pth", _sr_task(_s), notes="trained on DF2K"),
        _drct(
            "drct-imagenet",
            "DRCT (ImageNet pre-trained)",
            "DRCT",
            _s,
            f"DRCT_SRx{_s}_ImageNet-pretrain.pth",
            _sr_task(_s),
            notes="ImageNet pre-training, DF2K fine-tuning",
        ),
        _drct(
            "drct-l",
            "DRCT-L",
            "DRCT-L",
            _s,
            f"DRCT-L_SRx{_s}_ImageNet-pretrain.pth",
            _sr_task(_s),
            notes="ImageNet pre-training; the x2 file was removed from the authors' Drive (DRCT#21)"
            if _s == 2
            else "ImageNet pre-training",
        ),
    ]
_ENTRIES.append(
    _drct(
        "real-drct-gan",
        "Real-DRCT-GAN",
        "DRCT",
        4,
        "Real-DRCT-GAN_SRx4.pth",
        ("real_sr_x4",),
        notes="real-world degradations, GAN fine-tuned from the MSE model; the Drive folder gives no file "
        "name, so rename the download to this one",
        published=REAL_DRCT_WEIGHTS_PAGE,
    )
)

# ----------------------------------------------------------------------------------------------
# CRAFT (Li et al., "Feature Modulation Transformer: Cross-Refinement of Global Representation via
# High-Frequency Prior for Image Super-Resolution", ICCV 2023). network_g from AVC2-UESTC/CRAFT-SR
# options/train/CRAFT/*.yml (split sizes 4 x 16 are constructor defaults).
# ----------------------------------------------------------------------------------------------
CRAFT_PAPER = (
    "https://openaccess.thecvf.com/content/ICCV2023/papers/Li_Feature_Modulation_Transformer_"
    "Cross-Refinement_of_Global_Representation_via_High-Frequency_Prior_ICCV_2023_paper.pdf"
)
CRAFT_WEIGHTS_PAGE = (
    "the CRAFT-SR README (https://github.com/AVC2-UESTC/CRAFT-SR): one Google Drive zip "
    "https://drive.google.com/file/d/13wAmc93BPeBUBQ24zUZOuUpdBFG2aAY5/view (files under pretrained_models/)"
)
for _s in (2, 3, 4):
    _ENTRIES.append(
        ZooEntry(
            model="craft",
            display_name="CRAFT",
            arch="CRAFT",
            scale=_s,
            network_g=_freeze(
                {
                    "type": "CRAFT",
                    "upscale": _s,
                    "in_chans": 3,
                    "img_size": 64,
                    "window_size": 16,
                    "img_range": 1.0,
                    "depths": [2, 2, 2, 2],
                    "embed_dim": 48,
                    "num_heads": [6, 6, 6, 6],
                    "mlp_ratio": 2,
                    "resi_connection": "1conv",
                }
            ),
            weight_file=f"CRAFT_MODEL_X{_s}.pth",
            param_key="params",  # trained without EMA
            published=CRAFT_WEIGHTS_PAGE,
            paper=CRAFT_PAPER,
            window_multiple=16,
            supports_fp16=False,  # untested on real weights; transformer SR overflows in fp16 (HAT#127)
            supports_bf16=True,
            # The README's numbers come from inference_CRAFT.py, which always flip-pads; its global
            # (HFB) attention makes the padding change every output pixel, so we follow that script.
            pad_mode="symmetric_always",
            notes="lightweight (0.75 M parameters)",
            license="see the CRAFT-SR repository",
            tasks=_sr_task(_s),
        )
    )

# ----------------------------------------------------------------------------------------------
# Bundled defaults: CRAFT in its published configuration, trained by this project on a CPU: first on
# scikit-image's sample photos (options/train/bundled_CRAFT_SRx*_cpu.yml), then fine-tuned on the photo
# corpus (bundled_CRAFT_SRx*_corpus*.yml); data, iterations and tables in weights/README.md.
# Shipped in restorer/bundled/ so that every sr_x* task works with no download; the router uses them
# only when no official weights are present.
# ----------------------------------------------------------------------------------------------
BUNDLED_SHA256 = {
    2: "e92eae29cdfcde48a79addf36b938e89fb9e6fa7eba749d71a0a0543c0368cca",
    3: "f026374cd94f3c2ab0966ff5b4d6bd97b2fd4224a7818be95dc304dbcadaa6f5",
    4: "72d4fd4f621c0f3bcddfd49ff2e203e797b918c0632b4fb99bb9cf9a8c359033",
}
BUNDLED_FILES = {
    2: "restorer_CRAFT_SRx2_corpus.safetensors",
    3: "restorer_CRAFT_SRx3_corpus.safetensors",
    4: "restorer_CRAFT_SRx4_corpus.safetensors",
}
BUNDLED_RECIPES = {
    2: "options/train/bundled_CRAFT_SRx2_cpu.yml, then bundled_CRAFT_SRx2_corpus.yml and "
    "bundled_CRAFT_SRx2_corpus_stage3.yml",
    3: "options/train/bundled_CRAFT_SRx3_cpu.yml, then bundled_CRAFT_SRx3_corpus.yml, "
    "bundled_CRAFT_SRx3_corpus_stage2.yml and bundled_CRAFT_SRx3_corpus_stage3.yml",
    4: "options/train/bundled_CRAFT_SRx4_cpu.yml, then bundled_CRAFT_SRx4_corpus.yml and "
    "bundled_CRAFT_SRx4_corpus_stage2.yml",
}
for _s in (2, 3, 4):
    _ENTRIES.append(
        replace(
            _entry_in(_ENTRIES, "craft", _s),
            model="craft-bundled",
            display_name="CRAFT (bundled)",
            weight_file=BUNDLED_FILES[_s],
            param_key="params_ema",
            published=f"this repository: restorer/bundled/ (trained with {BUNDLED_RECIPES[_s]})",
            url=None,
            sha256=BUNDLED_SHA256[_s],
            notes="bundled default: trained here on a CPU ("
            + ("16 scikit-image photos" if "_skimage." in BUNDLED_FILES[_s] else "the photo corpus")
            + "), far weaker than official weights",
            license="Apache-2.0 (this project)",
        )
    )

# A CPU recipe for real_sr_x4, not shipped: the x4 file above fine-tuned on Real-ESRGAN's second-order
# degradation of the photo corpus, PSNR-oriented (L1 only): options/train/bundled_CRAFT_real_SRx4_corpus.yml.
# Its PSNR / SSIM beat bicubic and the sr_x4 default by a hair, but it smooths real photos more than
# bicubic does (weights/README.md: numbers and the before/after grid). A user who trains and exports it
# (python weights/make_bundled.py) gets it through the router when no official real-world weights are present.
REAL_SR_BUNDLED_FILE = "restorer_CRAFT_real_SRx4_corpus.safetensors"
REAL_SR_BUNDLED_SHA256 = None  # not shipped: weights/README.md says why
_ENTRIES.append(
    replace(
        _entry_in(_ENTRIES, "craft", 4),
        model="craft-real-cpu",
        display_name="CRAFT (real-world x4, CPU recipe)",
        weight_file=REAL_SR_BUNDLED_FILE,
        param_key="params_ema",
        published="not shipped (it smooths real photos more than bicubic: weights/README.md); train with "
        "options/train/bundled_CRAFT_real_SRx4_corpus.yml from the bundled x4 file",
        url=None,
        sha256=REAL_SR_BUNDLED_SHA256,
        notes="CPU recipe on the photo corpus with Real-ESRGAN's degradation (blur, resize, noise, JPEG, "
        "twice), L1 only: it removes noise and JPEG blocks, and detail with them",
        license="Apache-2.0 (this project)",
        tasks=("real_sr_x4",),
    )
)

# ----------------------------------------------------------------------------------------------
# DLGSANet (Li et al., "DLGSANet: Lightweight Dynamic Local and Global Self-Attention Networks for
# Image Super-Resolution", ICCV 2023). network_g from NeonLeexiang/DLGSANet option files.
# The Drive folders list no file names and the test YAMLs load net_g_latest.pth, so the file
# names below are ours: rename the download to them (or pass --weights).
# ----------------------------------------------------------------------------------------------
DLGSANET_PAPER = "https://arxiv.org/abs/2301.02031"
DLGSANET_CLASSIC_PAGE = (
    "the DLGSANet README (https://github.com/NeonLeexiang/DLGSANet), BI-Classic SR x4: Google Drive "
    "https://drive.google.com/drive/folders/1kqjoO7IEi7QmaOSEH37xKjRA_LcmL2eU or Baidu "
    "https://pan.baidu.com/s/1PyArsdTVpQd8cK2UV65bxg (code IMAG)"
)
DLGSANET_EFFICIENT_PAGE = (
    "the DLGSANet README (https://github.com/NeonLeexiang/DLGSANet), BI-Efficient SR (re-trained Light and "
    "Tiny): Google Drive https://drive.google.com/drive/folders/1jbh5hNP4AGhsMPabWG7yq1mIDa_FcriO"
)
_DLGSANET_COMMON: dict[str, Any] = {
    "type": "DLGSANet",
    "in_chans": 3,
    "buildblock_type": "sparseedge",
    "window_size": 7,
    "idynamic_num_heads": 6,
    "idynamic_ffn_type": "GDFN",
    "idynamic_ffn_expansion_factor": 2.0,
    "idynamic": True,
    "restormer_num_heads": 6,
    "restormer_ffn_type": "GDFN",
    "restormer_ffn_expansion_factor": 2.0,
    "tlc_flag": True,
    "activation": "relu",
    "body_norm": False,
    "img_range": 1.0,
    "upsampler": "pixelshuffledirect",
}
_DLGSANET_TLC_KERNEL = {2: 96, 3: 72, 4: 48}
_DLGSANET_SIZES = {  # name: (dim, groups, blocks)
    "Large_90C6G4B": (90, 6, 4),
    "Light_48C4G3B": (48, 4, 3),
    "Tiny_48C3G3B": (48, 3, 3),
}


def _dlgsanet(model: str, display: str, size: str, scale: int, published: str, notes: str) -> ZooEntry:
    dim, groups, blocks = _DLGSANET_SIZES[size]
    return ZooEntry(
        model=model,
        display_name=display,
        arch="DLGSANet",
        scale=scale,
        network_g=_freeze(
            {
                **_DLGSANET_COMMON,
                "dim": dim,
                "groups": groups,
                "blocks": blocks,
                "upscale": scale,
                "tlc_kernel": _DLGSANET_TLC_KERNEL[scale],
            }
        ),
        weight_file=f"DLGSANet_{size}_SRx{scale}.pth",
        param_key="params",  # the official test path loads 'params' (BasicSR's default)
        published=published,
        paper=DLGSANET_PAPER,
        window_multiple=1,  # convolutions and windowed channel attention: no padding needed
        supports_fp16=False,  # per-pixel predicted kernels times features: fp16 overflow risk
        supports_bf16=True,
        notes=notes,
        license="see the DLGSANet repository",
        tasks=_sr_task(scale),
    )


_ENTRIES.append(
    _dlgsanet(
        "dlgsanet",
        "DLGSANet",
        "Large_90C6G4B",
        4,
        DLGSANET_CLASSIC_PAGE,
        "classic model (4.76 M parameters); x2/x3 weights were never released",
    )
)
for _s in (2, 3, 4):
    _ENTRIES += [
        _dlgsanet(
            "dlgsanet-light",
            "DLGSANet-light",
            "Light_48C4G3B",
            _s,
            DLGSANET_EFFICIENT_PAGE,
            "lightweight (0.75 M parameters); re-trained by the authors, within 0.05 dB of the paper",
        ),
        _dlgsanet(
            "dlgsanet-tiny",
            "DLGSANet-tiny",
            "Tiny_48C3G3B",
            _s,
            DLGSANET_EFFICIENT_PAGE,
            "tiny (0.57 M parameters); re-trained by the authors",
        ),
    ]

# ----------------------------------------------------------------------------------------------
# Restore-RWKV (Yang et al., "Restore-RWKV: Efficient and Effective Medical Image Restoration with
# RWKV", IEEE JBHI; arXiv 2407.11087). network_g = the official Restore_RWKV constructor
# (model/Restore_RWKV.py). No trained weights are published; the official script saves a plain
# state dict (Generator_best.pth) per task, which loads strictly under any param_key. The file
# names below are ours: rename a trained file to them (or pass --weights).
# ----------------------------------------------------------------------------------------------
RESTORE_RWKV_PAPER = "https://arxiv.org/abs/2407.11087"
RESTORE_RWKV_PAGE = (
    "no trained weights published: https://github.com/Yaziwel/Restore-RWKV (the README links only the "
    "preprocessed datasets); train with options/train/RestoreRWKV_*.yml"
)
RESTORE_RWKV_DEFAULT = {"dim": 48, "num_blocks": [4, 6, 6, 8], "num_refinement_blocks": 4}
RESTORE_RWKV_LIGHT = {"dim": 16, "num_blocks": [1, 1, 2, 2], "num_refinement_blocks": 1}
BUNDLED_DENOISE_SHA256 = "8d637b1c2e9299e9a30554630497dcec77f72789da5c99f26187c73efb1b2410"


def _restore_rwkv(
    model: str,
    display_name: str,
    size: Mapping[str, Any],
    channels: int,
    weight_file: str,
    tasks: tuple[str, ...],
    notes: str,
    **overrides: Any,
) -> ZooEntry:
    fields: dict[str, Any] = dict(
        model=model,
        display_name=display_name,
        arch="Restore_RWKV",
        scale=1,
        network_g=_freeze(
            {"type": "Restore_RWKV", "inp_channels": channels, "out_channels": channels, **size}
        ),
        weight_file=weight_file,
        param_key="params",
        published=RESTORE_RWKV_PAGE,
        paper=RESTORE_RWKV_PAPER,
        window_multiple=8,  # three 2x down-samplings (the network also pads internally)
        in_channels=channels,
        out_channels=channels,
        supports_fp16=False,  # the squared-ReLU channel mix can overflow fp16; WKV itself runs in fp32
        supports_bf16=True,
        notes=notes
        + "; global receptive field (decay / (H*W)): tiling changes every pixel, use -t 0 where it fits",
        license="no license file in the official repository",
        tasks=tasks,
    )
    fields.update(overrides)
    return ZooEntry(**fields)


_MEDICAL_MODELS = {
    "ct_denoise": "restore-rwkv-ct",
    "mri_sr_x2": "restore-rwkv-mri-x2",
    "mri_sr_x4": "restore-rwkv-mri-x4",
    "pet_synthesis": "restore-rwkv-pet",
    "all_in_one": "restore-rwkv-all-in-one",
}
for _task, _model in _MEDICAL_MODELS.items():
    _ENTRIES.append(
        _restore_rwkv(
            _model,
            f"Restore-RWKV ({_task})",
            RESTORE_RWKV_DEFAULT,
            1,
            f"Restore_RWKV_{_task}.pth",
            (_task,),
            "published default configuration, 1 channel (27.85 M parameters as the paper counts)",
        )
    )
_ENTRIES.append(
    _restore_rwkv(
        "restore-rwkv",
        "Restore-RWKV",
        RESTORE_RWKV_DEFAULT,
        3,
        "Restore_RWKV_denoise_sigma25_color.pth",
        ("denoise",),
        "published default configuration with 3 channels; train with "
        "options/train/RestoreRWKV_denoise_sigma25_color.yml",
    )
)
_ENTRIES.append(
    _restore_rwkv(
        "restore-rwkv-light",
        "Restore-RWKV-light (bundled)",
        RESTORE_RWKV_LIGHT,
        3,
        "restorer_RestoreRWKV_light_denoise_sigma25_corpus.safetensors",
        ("denoise",),
        "our configuration for the paper's unpublished 1.16 M-parameter light model (1,156,961 as the "
        "paper counts), not the authors' model; bundled weights trained here for Gaussian sigma 25",
        param_key="params_ema",
        published="this repository: weights/ (trained with options/train/"
        "bundled_RestoreRWKV_denoise_sigma25_cpu.yml, then its _stage2.yml and _corpus.yml)",
        sha256=BUNDLED_DENOISE_SHA256,
        license="Apache-2.0 (this project)",
    )
)

# ----------------------------------------------------------------------------------------------
# S2LIC (Wang et al., "S2LIC: Learned Image Compression with the SwinV2 Block, Adaptive Channel-wise
# and Global-inter Attention Context", arXiv 2403.14471). wyq2021/S2LIC publishes code only; the
# network options below are the published N=192, M=320 model (ACCTX/AGCTX rebuilt from the
# figures) on CompressAI's lambda ladder, and a small configuration for CPU training. "Published
# configuration" (s2lic-q*) is the paper's figure: non-anchors also see their slice's decoded anchors
# (92.65 M parameters); s2lic-released-q* is the released code's layout, which drops that context.
# ----------------------------------------------------------------------------------------------
S2LIC_PAPER = "https://arxiv.org/abs/2403.14471"
_S2LIC_PUBLISHED = {
    "type": "S2LIC",
    "N": 192,
    "M": 320,
    "num_slices": 10,
    "depths": [1, 2, 3, 1, 1],
    "num_heads": [4, 8, 16, 16, 16],
    "window_size": 8,
    "mlp_ratio": 4.0,
    "drop_path_rate": 0.1,
    "enh_channels": 64,
    "intra_slice_context": True,
}
_S2LIC_SMALL = {
    "type": "S2LIC",
    "N": 64,
    "M": 96,
    "num_slices": 6,
    "depths": [1, 1, 1, 1, 1],
    "num_heads": [2, 4, 4, 4, 4],
    "window_size": 8,
    "mlp_ratio": 2.0,
    "drop_path_rate": 0.0,
    "enh_channels": 32,
    "enh_growth": 16,
    "ep_hidden": [96, 64, 48],
    "lrp_hidden": [64, 32],
    "ctx_head_dim": 16,
    "intra_slice_context": True,
}


def _s2lic(model: str, display_name: str, options: Mapping[str, Any], **fields: Any) -> ZooEntry:
    return ZooEntry(
        model=model,
        display_name=display_name,
        arch="S2LIC",
        scale=1,
        network_g=_freeze(options),
        param_key="params",
        paper=S2LIC_PAPER,
        window_multiple=64,
        supports_fp16=False,
        supports_bf16=False,  # entropy coding must be bit-exact between encoder and decoder
        tasks=("compress",),
        **fields,
    )


for _q, _lam in enumerate((0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483), 1):
    _ENTRIES.append(
        _s2lic(
            f"s2lic-q{_q}",
            f"S2LIC (q{_q}, MSE lambda {_lam})",
            _S2LIC_PUBLISHED,
            weight_file=f"S2LIC_mse_q{_q}.pth",
            published="no checkpoints published (wyq2021/S2LIC has code only); train with "
            f"options/train/S2LIC_mse_q{_q}.yml",
            notes=f"lambda={_lam}; ACCTX/AGCTX reconstructed from the paper's figures",
            license="see wyq2021/S2LIC",
        )
    )
# The layout of the released code (wyq2021/S2LIC): the non-anchor half of each slice sees the same
# context as the anchor half (no intra-slice anchor context, 73.96 M parameters). A checkpoint trained
# with that code loads here strictly; detection tells the two layouts apart by the extra context lists.
for _q, _lam in enumerate((0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483), 1):
    _ENTRIES.append(
        _s2lic(
            f"s2lic-released-q{_q}",
            f"S2LIC, released code's layout (q{_q}, MSE lambda {_lam})",
            {**_S2LIC_PUBLISHED, "intra_slice_context": False},
            weight_file=f"S2LIC_released_mse_q{_q}.pth",
            published="no checkpoints published (wyq2021/S2LIC has code only); checkpoints trained with "
            f"that code, or options/train/S2LIC_released_mse_q{_q}.yml",
            notes=f"lambda={_lam}; the released code's entropy model (non-anchors without their slice's "
            "anchors)",
            license="see wyq2021/S2LIC",
        )
    )
_S2LIC_SMALL_SHA256 = {
    1: "ee419304e9bb4c8b0d10711ea87929cb80a90bcbdf661c37d278e0b227b84843",
    2: "05e5c238647615dc372e44d4034ae3e4c74da1442bfcd6277e3557c45549dd7b",
}
for _q, _lam in ((1, 0.0067), (2, 0.0250)):
    _ENTRIES.append(
        _s2lic(
            f"s2lic-small-q{_q}",
            f"S2LIC small (q{_q})",
            _S2LIC_SMALL,
            weight_file=f"restorer_S2LIC_small_q{_q}_skimage.safetensors",
            published="this repository: weights/ "
            f"(trained with options/train/bundled_S2LIC_small_q{_q}_cpu.yml)",
            sha256=_S2LIC_SMALL_SHA256[_q],
            notes=f"lambda={_lam}; small configuration (5.9 M parameters) trained here for 1,500 iterations: "
            "far below JPEG (weights/README.md)",
            license="Apache-2.0 (this project)",
        )
    )

# ----------------------------------------------------------------------------------------------
# RRFormer (Zhang et al., "Benchmarking Ultra-High-Definition Image Reflection Removal",
# arXiv 2308.00265). Parameter names follow the public DRNet; the Swin residual is applied (the
# public code's block returns its input). No checkpoint is published.
# ----------------------------------------------------------------------------------------------
RRFORMER_PAPER = "https://arxiv.org/abs/2308.00265"
RRFORMER_REPO = (
    "https://github.com/Liar-zzy/Benchmarking-Ultra-High-Definition-Single-Image-Reflection-Removal"
)
_ENTRIES.append(
    ZooEntry(
        model="rrformer",
        display_name="RRFormer",
        arch="RRFormer",
        scale=1,
        network_g=_freeze(
            {
                "type": "RRFormer",
                "in_chans": 3,
                "out_chans": 3,
                "n_feats": 256,
                "embed_dim": 240,
                "img_size": 256,
                "patch_size": 4,
                "depths": [6, 6, 6, 6, 6],
                "num_heads": [6, 6, 6, 6, 6],
                "window_size": 8,
                "mlp_ratio": 2.0,
                "drop_path_rate": 0.1,
                "resi_connection": "1conv",
                "pyramid": True,
                "pyramid_scales": [4, 8, 16, 32],
                "hypercolumn_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"],
                "vgg_weights": None,
                "swin_residual": True,
            }
        ),
        weight_file="RRFormer_UHDRR4K.pth",  # our name: no checkpoint is published
        param_key="params",
        published=f"nowhere yet: the authors list their 4K/8K checkpoints as a to-do ({RRFORMER_REPO}); "
        "train one with options/train/RRFormer_UHDRR4K.yml",
        paper=RRFORMER_PAPER,
        window_multiple=32,
        tile_overlap=128,
        cpu_tile=512,
        supports_fp16=False,
        supports_bf16=True,
        notes="also needs torchvision's ImageNet VGG19 file vgg19-dcbb9e9d.pth in a weights folder; the "
        "public code's Swin block returns its input (17 M dead parameters): here its residual is applied",
        license="no license file in the public repository",
        tasks=("reflection_removal",),
    )
)

# The public code's behaviour: its Swin block returns its input, so a checkpoint trained with that code
# has untrained Swin weights that the published configuration above would run. Same keys and shapes as
# `rrformer`, so a file cannot say which it is: the user chooses with --model rrformer-public.
_ENTRIES.append(
    replace(
        _entry_in(_ENTRIES, "rrformer", 1),
        model="rrformer-public",
        display_name="RRFormer (public code: identity Swin block)",
        network_g=_freeze({**_thaw(_entry_in(_ENTRIES, "rrformer", 1).network_g), "swin_residual": False}),
        notes="for checkpoints trained with the public RRFormer code, whose Swin block returns its input; "
        "also needs torchvision's ImageNet VGG19 file vgg19-dcbb9e9d.pth",
    )
)

# A CPU recipe for reflection_removal, not shipped: the published architecture at small widths, trained by
# this project on synthetic pairs of scikit-image photos (options/train/bundled_RRFormer_cpu.yml says why
# each departure from the published recipe). Its VGG19 is torchvision's layout with a fixed random
# initialisation, stored in the checkpoint. It did not improve on the untouched input on unseen photos
# (weights/README.md), so no file ships; a user who trains and exports it gets it through the router.
_ENTRIES.append(
    replace(
        _entry_in(_ENTRIES, "rrformer", 1),
        model="rrformer-small",
        display_name="RRFormer (small, CPU recipe)",
        network_g=_freeze(
            {
                "type": "RRFormer",
                "in_chans": 3,
                "out_chans": 3,
                "n_feats": 32,
                "embed_dim": 48,
                "img_size": 64,
                "patch_size": 4,
                "depths": [2, 2],
                "num_heads": [3, 3],
                "window_size": 8,
                "mlp_ratio": 2.0,
                "drop_path_rate": 0.0,
                "pyramid": True,
                "pyramid_scales": [4, 8, 16, 32],
                "hypercolumn_layers": ["relu1_1", "relu2_1", "relu3_1"],
                "vgg_weights": "random",
                "vgg_seed": 0,
                "vgg_in_checkpoint": True,
                "global_residual": True,
            }
        ),
        weight_file="restorer_RRFormer_small_skimage.safetensors",
        param_key="params_ema",
        published="not shipped (it did not beat the untouched input on unseen photos: weights/README.md); "
        "train with options/train/bundled_RRFormer_cpu.yml, export with python weights/make_bundled.py "
        "--reflection",
        url=None,
        sha256=None,
        notes="CPU recipe on synthetic reflections of 16 scikit-image photos; random (fixed, stored) VGG19 "
        "features instead of ImageNet ones",
        license="Apache-2.0 (this project)",
    )
)

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
