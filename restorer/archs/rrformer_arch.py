"""RRFormer: ultra-high-definition single-image reflection removal.

Zhang et al., "Benchmarking Ultra-High-Definition Image Reflection Removal" (arXiv 2308.00265). The public
code (``Liar-zzy/Benchmarking-Ultra-High-Definition-Single-Image-Reflection-Removal``) is an ERRNet fork:
the network is ``models/arch/default.py`` ``DRNet`` built by ``errnet(1475, 3)``, fed with a VGG19
hypercolumn that the model class (``models/errnet_model.py``) computes. No checkpoints are published.

Structure (input ``(B, 3, H, W)`` RGB in ``[0, 1]``; the paper's module names in brackets):

1. [preprocessing embedding] hypercolumn: frozen VGG19 ``features`` on the raw ``[0, 1]`` input (no
   ImageNet normalisation, as in the public code), maps after relu1_1, relu2_1, relu3_1, relu4_1 and
   relu5_1 (64+128+256+512+512 = 1472 channels) bilinearly resized to ``H x W`` (align_corners False)
   and concatenated after the RGB channels: 1475 channels. ``conv1`` 1x1 -> ``n_feats`` + ReLU,
   ``conv2`` 3x3 + ReLU, ``conv3`` 3x3 stride 2 -> ``embed_dim`` (240) + ReLU.
2. [self-attention feature extraction] ``swinir_block``: SwinIR's body at ``H/2 x W/2``: reflect pad to
   the window, LayerNorm'd tokens, ``len(depths)`` RSTBs (Swin layers + 3x3 conv + residual), LayerNorm,
   ``conv_after_body`` 3x3, **plus the block input** (SwinIR's residual).
3. [multi-scale spatial feature extraction] ``deconv1`` (ConvTranspose 4x4 stride 2 -> ``n_feats``,
   ReLU), ``deconv2`` 3x3 + ReLU, ``pyramid_module`` (average pools of 4/8/16/32 px, 1x1 convs to
   ``n_feats // 4`` + LeakyReLU 0.2, nearest upsampling, concatenation, 1x1 ``bottleneck`` + LeakyReLU
   0.2), ``deconv3`` 1x1 -> 3 + ReLU.
4. Output: the transmission layer ``T`` (``>= 0``, not clipped above; evaluation clips to ``[0, 1]``).

State-dict keys are the public ``DRNet``'s (``conv1.conv2d.weight``, ``swinir_block.layers.0.
residual_group.blocks.1.attn_mask``, ``pyramid_module.stages.0.1.weight``, ...), so a checkpoint's
``icnn`` state dict loads with ``strict=True``. The VGG19 weights are not in it (as in the public code):
they come from torchvision's ImageNet file ``vgg19-dcbb9e9d.pth`` or another source given by
``vgg_weights`` (see :class:`RRFormer`); nothing is ever downloaded.

Deviations from the public code (each deliberate):

* **The Swin block's residual is applied.** The public ``SwinIR.forward`` computes
  ``conv_after_body(features) + input`` and then returns the padded input, so its 17.06 M parameters
  are dead and published numbers describe a CNN. Here the block returns the residual, as SwinIR and the
  paper intend. ``swin_residual=False`` reproduces the public (identity) behaviour.
* The hypercolumn is computed inside the module (the public model class does it), from injected VGG19
  weights (the public code downloads them with ``vgg19(pretrained=True)`` at run time).
* ``conv1`` over the hypercolumn is evaluated source by source: each VGG map is projected by its slice
  of the 1x1 kernel at its own resolution, then bilinearly resized and summed. Bilinear resizing is
  linear per channel and a 1x1 convolution is linear across channels at each pixel, so the two commute
  and this equals ``conv1(cat(...))`` up to float rounding, without ever holding the 1475-channel
  tensor (about 49 GB for a 4K image). The pyramid ``bottleneck`` likewise projects each pooled map at
  its own resolution before the (nearest) upsampling, exactly. Same parameters, same math.
* Odd heights or widths are reflect-padded to even and the output is cropped back (the public network
  would return ``H+1`` rows). Padding of the Swin features to the window uses
  :func:`~restorer.archs.layers.pad_to_multiple` (reflect, then replicate where reflect cannot
  supply the rows; identical wherever the public ``F.pad(..., 'reflect')`` works).
* Shifted-window masks are the four region masks of :func:`~restorer.archs.layers.
  shifted_window_region_masks` computed per input size; the public code rebuilds the full
  ``(nW, 64, 64)`` mask in every shifted block (0.53 GB per block at 4K). The stored ``attn_mask``
  buffers are kept (checkpoint keys, shaped by ``img_size // patch_size``) but not read; for an input
  of exactly that size they are identical.
* Attention runs through the shared :class:`~restorer.archs.layers.WindowAttention` (SDPA), tokens in
  window order inside each RSTB; float differences are of the order of 1e-6.
* ``swinir_block.conv_last`` (240 -> 3, SwinIR's denoising head) is kept for the state-dict layout and,
  as in the public code, never used; its parameters are frozen (``requires_grad=False``) so optimisers
  skip them and DistributedDataParallel does not wait for their gradients.
* ``global_residual`` (off by default; on in the small CPU recipe, ``rrformer-small``) predicts the
  transmission layer as a correction of the input, ``relu(x + deconv3.conv2d(features))``. The parameters
  are the same.
* Widths, depths and hypercolumn layers are constructor options (the public code hard-codes 240 Swin
  channels and the five relu*_1 layers); the defaults are the public configuration. ``vgg_in_checkpoint``
  (off by default) can store a variant's own frozen VGG19 in its state dict. The unused ``EdgeMap`` of
  the public model class is dropped.

Tiling (see :attr:`RRFormer.window_multiple`): tiles must be multiples of 32 px on a 32 px grid (the
pyramid pools' largest cell; it also covers the VGG pools' 16 and the Swin windows' 16 input px), and
neighbouring tiles need a wide overlap: relu5_1 alone sees about +-95 px (its receptive field is 156 px,
then a x16 bilinear resize), the CNN layers and the 32 px pyramid cells add about 50 px, and the 30
shifted-window layers spread information further still. :data:`RECOMMENDED_TILE_OVERLAP` is what the seam
checks support (tests/test_rrformer.py, bench/bench_rrformer_memory.py). On whole images whose sides are
not multiples of 32 the public pyramid floors the pooled grid and nearest-resizes it back, so its cells
drift by up to 16 px from the pixels they average (kept here, as in the public code); tiled inference pads
to a multiple of 32, where the cells are exact, so the two differ slightly on such sizes by construction.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import lcm
from pathlib import Path

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as torch_checkpoint
from torch import Tensor, nn

from restorer.archs.drct_arch import SwinTransformerBlock, _Context
from restorer.archs.layers import (
    PatchEmbed,
    PatchUnEmbed,
    WindowPartition,
    crop_to,
    init_transformer_weights,
    make_window_partition,
    pad_to_multiple,
    shifted_window_region_masks,
)
from restorer.archs.registry import register
from restorer.errors import CheckpointError, WeightsNotFoundError
from restorer.weights import AUXILIARY_WEIGHTS, find_auxiliary

__all__ = [
    "HYPERCOLUMN_LAYERS",
    "RECOMMENDED_TILE_OVERLAP",
    "RRFormer",
    "VGG19Features",
    "VGG19_FILE",
    "VGG19_URL",
    "build_vgg19_features",
    "find_vgg19_weights",
    "missing_vgg19_message",
    "read_vgg19_state",
]

#: torchvision's ImageNet VGG19 (``VGG19_Weights.IMAGENET1K_V1``): the file ``vgg19(pretrained=True)``
#: fetches in the public code; ``restorer weights download vgg19`` fetches it (restorer.weights' registry).
VGG19_FILE = AUXILIARY_WEIGHTS["vgg19"].file
VGG19_URL = AUXILIARY_WEIGHTS["vgg19"].url

#: The public hypercolumn: the first ReLU of every VGG19 block (ERRNet's indices 2, 7, 12, 21, 30).
HYPERCOLUMN_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

#: Tile overlap (input px) at which tiled output matches whole-image output within the seam budget
#: (>= 40 dB; see tests/test_rrformer.py and bench/bench_rrformer_memory.py).
RECOMMENDED_TILE_OVERLAP = 128

# VGG19 configuration "E": channels per conv, "M" = 2x2 max pool (torchvision's ``cfgs["E"]``).
_VGG19_CFG = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


def _vgg19_layer_table() -> dict[str, tuple[int, int]]:
    """``name -> (index in vgg19().features, channels)`` for convK_i, reluK_i and poolK."""
    table: dict[str, tuple[int, int]] = {}
    index, block, conv, channels = 0, 1, 1, 3
    for item in _VGG19_CFG:
        if item == "M":
            table[f"pool{block}"] = (index, channels)
            index, block, conv = index + 1, block + 1, 1
        else:
            channels = int(item)
            table[f"conv{block}_{conv}"] = (index, channels)
            table[f"relu{block}_{conv}"] = (index + 1, channels)
            index, conv = index + 2, conv + 1
    return table


VGG19_LAYERS = _vgg19_layer_table()


# ------------------------------------------------------------------------------------------------
# Frozen VGG19 features
# ------------------------------------------------------------------------------------------------


def find_vgg19_weights() -> Path | None:
    """``vgg19-dcbb9e9d.pth`` (or ``.safetensors``) in the weights folders of :mod:`restorer.weights`."""
    return find_auxiliary("vgg19")


def missing_vgg19_message() -> str:
    from restorer.weights import default_download_dir, weight_dirs

    return (
        f"RRFormer needs torchvision's ImageNet VGG19 weights, '{VGG19_FILE}' "
        f"({AUXILIARY_WEIGHTS['vgg19'].size}), and it is in none "
        f"of {', '.join(str(d) for d in weight_dirs())}. Run `restorer weights download vgg19` (the only "
        f"command that uses the network; it fetches {VGG19_URL}), or download that file yourself and put "
        f"it in {default_download_dir()}/ (or a folder named by RESTORER_WEIGHTS_DIR)."
    )


def read_vgg19_state(source: str | os.PathLike | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``features`` tensors of a VGG19 state dict, keyed ``'<index>.weight'`` / ``'<index>.bias'``.

    ``source`` is a state dict or a file (``.pth`` / ``.pt`` / ``.safetensors``), with torchvision's keys
    (``features.0.weight``, ..., ``classifier.*`` ignored) or the features' own (``0.weight``, ...). A
    relative file name that does not exist is also looked for in the weights folders.
    """
    if isinstance(source, Mapping):
        state = dict(source)
        origin = "the VGG19 state dict"
    else:
        path = Path(source).expanduser()
        if not path.is_file() and not path.is_absolute():
            from restorer.weights import weight_dirs

            path = next((d / path for d in weight_dirs() if (d / path).is_file()), path)
        if not path.is_file():
            if path.name == VGG19_FILE:
                raise WeightsNotFoundError(missing_vgg19_message())
            raise WeightsNotFoundError(f"VGG19 weight file not found: {path}")
        state = _read_file(path)
        origin = str(path)
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        features = {k: v for k, v in state.items() if k.split(".")[0].isdigit()}
    if not features:
        raise CheckpointError(
            f"{origin} holds no VGG19 'features.*' tensors (keys: {', '.join(list(state)[:5])})."
        )
    return features


def _read_file(path: Path) -> dict[str, Tensor]:
    """Read a checkpoint without executing code; memory-map zip checkpoints (VGG19's classifier, 80%
    of the file, is never read)."""
    from restorer.weights import read_checkpoint

    if path.suffix.lower() in (".pth", ".pt"):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # legacy (non-zip) files cannot be memory-mapped: read them normally below
            pass
    state = read_checkpoint(path)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is not a state dict.")
    return dict(state)


class VGG19Features(nn.Module):
    """Frozen VGG19 ``features`` (torchvision's layer order) up to ``last_layer``; no parameters train.

    ``features`` is ``torchvision.models.vgg19(weights=None).features[: index + 1]`` (state-dict keys
    ``features.<index>.weight``, torchvision's). Built without weights: load them with
    :meth:`load_vgg19_state` or initialise with :meth:`init_random`, or use :func:`build_vgg19_features`.

    ``forward(x, indices)`` runs ``x`` ``(B, 3, H, W)`` through the layers and returns the outputs after
    each index in ``indices`` (ascending ``features`` indices, e.g. ``(1, 6, 11, 20, 29)``).
    """

    def __init__(self, last_layer: str = "relu5_1") -> None:
        super().__init__()
        import torchvision

        if last_layer not in VGG19_LAYERS:
            raise ValueError(f"unknown VGG19 layer {last_layer!r}; use e.g. {', '.join(HYPERCOLUMN_LAYERS)}")
        self.last_layer = last_layer
        last = VGG19_LAYERS[last_layer][0]
        device = torch.empty(0).device  # the default device (meta-device construction allocates nothing)
        with torch.device("meta"):  # the classifier (120 M parameters) is never materialised
            full = torchvision.models.vgg19(weights=None)
        self.features = full.features[: last + 1].to_empty(device=device)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # frozen: always in eval mode

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> VGG19Features:
        """torchvision's VGG initialisation (Kaiming normal, fan_out, zero bias) from ``seed``."""
        if self._is_meta():
            return self
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                weight = torch.empty(module.weight.shape, dtype=torch.float32)
                nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu", generator=generator)
                module.weight.copy_(weight)
                module.bias.zero_()
        return self

    @torch.no_grad()
    def load_vgg19_state(
        self, features: Mapping[str, Tensor], origin: str = "VGG19 weights"
    ) -> VGG19Features:
        """Copy the needed convolutions from ``features`` (keys ``'<index>.weight'``, extra keys ignored)."""
        if self._is_meta():
            return self
        problems = []
        for name, param in self.features.state_dict().items():
            value = features.get(name)
            if value is None:
                problems.append(f"missing {name}")
            elif tuple(value.shape) != tuple(param.shape):
                problems.append(f"{name} {tuple(value.shape)} vs {tuple(param.shape)}")
        if problems:
            raise CheckpointError(f"{origin} are not torchvision's VGG19: {'; '.join(problems[:4])}.")
        for name, param in self.features.state_dict().items():
            param.copy_(features[name].to(dtype=param.dtype))
        return self

    def _is_meta(self) -> bool:
        return self.features[0].weight.is_meta

    def forward(self, x: Tensor, indices: Sequence[int]) -> list[Tensor]:
        wanted = set(indices)
        outs = []
        for i, layer in enumerate(self.features[: max(indices) + 1]):
            x = layer(x)
            if i in wanted:
                outs.append(x)
        return outs


def build_vgg19_features(
    vgg_weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
    last_layer: str = "relu5_1",
    seed: int = 0,
) -> VGG19Features:
    """A frozen :class:`VGG19Features` with weights from ``vgg_weights``.

    ``None``: torchvision's ImageNet file ``vgg19-dcbb9e9d.pth`` from the weights folders (a
    :class:`~restorer.errors.WeightsNotFoundError` says how to get it when absent); ``'random'``:
    torchvision's random initialisation from ``seed`` (tests; variants that store their VGG in their own
    checkpoint); a path or a state dict otherwise. Nothing is downloaded.
    """
    vgg = VGG19Features(last_layer)
    if vgg._is_meta():
        return vgg
    if isinstance(vgg_weights, str) and vgg_weights == "random":
        return vgg.init_random(seed)
    if vgg_weights is None:
        found = find_vgg19_weights()
        if found is None:
            raise WeightsNotFoundError(missing_vgg19_message())
        vgg_weights = found
    origin = "the VGG19 state dict" if isinstance(vgg_weights, Mapping) else f"VGG19 weights in {vgg_weights}"
    return vgg.load_vgg19_state(read_vgg19_state(vgg_weights), origin)


# ------------------------------------------------------------------------------------------------
# SwinIR body (the public ``SwinIR`` class as DRNet uses it: no shallow conv, no upsampler)
# ------------------------------------------------------------------------------------------------


@dataclass
class _Tokens:
    """Per-size state shared by every Swin layer of one forward."""

    ctx: _Context  # what SwinTransformerBlock reads (plain / shifted partitions, region masks)
    plain: WindowPartition  # raster -> plain-window token order (perm) and back (inv)


class SwinLayerStack(nn.Module):
    """SwinIR's ``BasicLayer`` without downsampling: ``blocks`` alternate plain and shifted windows."""

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        norm_layer: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim,
                input_resolution=input_resolution,
                num_heads=num_heads,
                window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop,
                attn_drop=attn_drop,
                drop_path=drop_path[i],
                norm_layer=norm_layer,
            )
            for i in range(depth)
        )


class RSTB(nn.Module):
    """Residual Swin Transformer block: ``x + conv(layers(x))`` on ``(B, L, C)`` raster-order tokens.

    ``residual_group.blocks.*`` and ``conv`` are the public keys (``resi_connection`` ``'1conv'`` or
    ``'3conv'``); SwinIR's parameter-free ``patch_embed`` / ``patch_unembed`` are plain reshapes here.
    """

    def __init__(self, dim: int, resi_connection: str, **layer_kwargs) -> None:
        super().__init__()
        self.residual_group = SwinLayerStack(dim=dim, **layer_kwargs)
        if resi_connection == "1conv":
            self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        elif resi_connection == "3conv":
            self.conv = nn.Sequential(
                nn.Conv2d(dim, dim // 4, 3, 1, 1),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Conv2d(dim // 4, dim, 3, 1, 1),
            )
        else:
            raise ValueError(f"resi_connection {resi_connection!r} is not '1conv' or '3conv'")

    def forward(self, x: Tensor, tokens: _Tokens, size: tuple[int, int]) -> Tensor:
        b, _, c = x.shape
        # Every op but attention is per token: keep plain-window order through the layers (one gather
        # each way per RSTB instead of two per shifted block).
        y = x.index_select(1, tokens.plain.perm)
        for block in self.residual_group.blocks:
            y = block(y, tokens.ctx)
        y = y.index_select(1, tokens.plain.inv)
        y = self.conv(y.transpose(1, 2).reshape(b, c, size[0], size[1]))
        return y.flatten(2).transpose(1, 2) + x


class SwinIRBody(nn.Module):
    """The public ``SwinIR`` as DRNet uses it: ``(B, C, h, w) -> (B, C, h, w)``, any ``h, w >= 1``.

    Reflect-pads to the window, then ``conv_after_body(norm(RSTBs(LN(tokens)))) + input`` (with
    ``residual=True``; the public forward returns the input instead), cropped back. ``img_size //
    patch_size`` is only the nominal token grid that shapes the stored ``attn_mask`` buffers.
    """

    def __init__(
        self,
        img_size: int = 256,
        patch_size: int = 4,
        embed_dim: int = 240,
        depths: Sequence[int] = (6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        patch_norm: bool = True,
        resi_connection: str = "1conv",
        unused_out_chans: int = 3,
        residual: bool = True,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if len(num_heads) < len(depths):
            raise ValueError("RRFormer: num_heads needs one entry per RSTB (len(depths))")
        bad_heads = [h for h in num_heads[: len(depths)] if embed_dim % h]
        if bad_heads:
            raise ValueError(f"RRFormer: embed_dim {embed_dim} is not a multiple of num_heads {bad_heads}")
        self.window_size = window_size
        self.residual = residual
        self.use_checkpoint = use_checkpoint
        self.patch_embed = PatchEmbed(
            img_size, patch_size, embed_dim, embed_dim, norm_layer if patch_norm else None
        )
        self.patch_unembed = PatchUnEmbed(img_size, patch_size, embed_dim, embed_dim)
        resolution = tuple(self.patch_embed.patches_resolution)
        if min(resolution) <= window_size or resolution[0] % window_size or resolution[1] % window_size:
            raise ValueError(
                f"RRFormer: img_size // patch_size = {resolution} must exceed and be a multiple of "
                f"window_size {window_size} (it shapes the stored shift masks; public: 256 // 4 = 64)"
            )
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList(
            RSTB(
                dim=embed_dim,
                resi_connection=resi_connection,
                input_resolution=resolution,
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                norm_layer=norm_layer,
            )
            for i in range(len(depths))
        )
        self.norm = norm_layer(embed_dim)
        if resi_connection == "1conv":
            self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        else:
            self.conv_after_body = nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim // 4, 3, 1, 1),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim // 4, 1, 1, 0),
                nn.LeakyReLU(negative_slope=0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim, 3, 1, 1),
            )
        # SwinIR's denoising head: built by the public code, never called. Kept for the state-dict layout.
        self.conv_last = nn.Conv2d(embed_dim, unused_out_chans, 3, 1, 1)
        self.apply(init_transformer_weights)
        self.conv_last.requires_grad_(False)
        self._cache: dict[tuple, WindowPartition] = {}

    def _tokens(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> _Tokens:
        ws = self.window_size
        key = (h, w, device)
        plain = self._cache.get(key)
        if plain is None:
            if len(self._cache) >= 8:
                self._cache.clear()
            plain = self._cache[key] = make_window_partition(h, w, ws, 0, device)
        shifted_key = (h, w, device, "shifted")
        shifted = self._cache.get(shifted_key)
        if shifted is None:
            shifted = self._cache[shifted_key] = make_window_partition(h, w, ws, ws // 2, device).relative_to(
                plain
            )
        masks = shifted_window_region_masks(ws, ws // 2, device=device, dtype=dtype)
        return _Tokens(_Context(plain.relative_to(plain), shifted, masks), plain)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x, _ = pad_to_multiple(x, self.window_size)
        if not self.residual:  # the public forward: the padded input, cropped (the Swin layers are dead)
            return crop_to(x, h, w)
        hp, wp = x.shape[-2:]
        tokens = self._tokens(hp, wp, x.dtype, x.device)
        t = self.pos_drop(self.patch_embed(x))
        for layer in self.layers:
            if self.use_checkpoint and self.training:
                t = torch_checkpoint.checkpoint(layer, t, tokens, (hp, wp), use_reentrant=False)
            else:
                t = layer(t, tokens, (hp, wp))
        feats = self.patch_unembed(self.norm(t), (hp, wp))
        return crop_to(self.conv_after_body(feats) + x, h, w)


# ------------------------------------------------------------------------------------------------
# CNN parts of DRNet
# ------------------------------------------------------------------------------------------------


def conv_layer(
    conv: type[nn.Module],
    in_ch: int,
    out_ch: int,
    kernel_size: int,
    stride: int = 1,
    padding: int | None = None,
) -> nn.Sequential:
    """DRNet's ``ConvLayer`` without norm: ``conv2d`` then ReLU (keys ``conv2d.weight`` / ``.bias``)."""
    padding = (kernel_size - 1) // 2 if padding is None else padding
    return nn.Sequential(
        OrderedDict(conv2d=conv(in_ch, out_ch, kernel_size, stride, padding), act=nn.ReLU(inplace=True))
    )


class PyramidPooling(nn.Module):
    """ERRNet's pyramid pooling: ``(B, C, H, W) -> (B, out, H, W)``.

    For each scale ``s``: ``AvgPool(s)`` (stride ``s``, floor) -> 1x1 conv to ``ct_channels`` (no bias)
    -> LeakyReLU 0.2 -> nearest resize to ``H x W``; concatenated with the input (stages first) and
    mapped by the 1x1 ``bottleneck`` + LeakyReLU 0.2. The bottleneck is applied slice by slice, each
    stage's slice at the pooled resolution before the resize (nearest resizing picks one source pixel per
    output pixel, so this is exact), which avoids the ``C + n * ct`` channel concatenation at full size.
    """

    def __init__(self, in_channels: int, out_channels: int, scales: Sequence[int], ct_channels: int) -> None:
        super().__init__()
        self.scales = tuple(int(s) for s in scales)
        self.ct_channels = ct_channels
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AvgPool2d(kernel_size=(s, s)),
                nn.Conv2d(in_channels, ct_channels, kernel_size=1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
            )
            for s in self.scales
        )
        self.bottleneck = nn.Conv2d(in_channels + len(self.scales) * ct_channels, out_channels, 1, 1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, feats: Tensor) -> Tensor:
        h, w = feats.shape[-2:]
        weight = self.bottleneck.weight
        ct = self.ct_channels
        out = F.conv2d(feats, weight[:, len(self.stages) * ct :], self.bottleneck.bias)
        for i, stage in enumerate(self.stages):
            prior = F.conv2d(stage(feats), weight[:, i * ct : (i + 1) * ct])
            out.add_(F.interpolate(prior, size=(h, w), mode="nearest"))  # in place, as in RRFormer.embed
        return self.relu(out)


# ------------------------------------------------------------------------------------------------
# RRFormer
# ------------------------------------------------------------------------------------------------


@register
class RRFormer(nn.Module):
    """RRFormer (the public ``DRNet`` with its VGG19 hypercolumn and a working Swin block).

    The defaults are the public configuration (``errnet(1475, 3)``: 256 features, 240 Swin channels,
    5 RSTBs x 6 layers, 6 heads, window 8, mlp ratio 2, pyramid 4/8/16/32): 20.36 M parameters, none of
    them VGG19's.

    Args:
        in_chans: image channels (RGB).
        out_chans: output channels (the transmission layer).
        n_feats: CNN width (``conv1``, ``conv2``, ``deconv*``, pyramid).
        embed_dim: Swin width (``conv3`` output; 240 in the public code).
        img_size: nominal training size; ``img_size // patch_size`` shapes the stored ``attn_mask``
            buffers (the public ``SwinIR(img_size=256, patch_size=4)`` gives 64 x 64).
        patch_size: see ``img_size`` (no patchification happens, as in SwinIR).
        depths: Swin layers per RSTB.
        num_heads: heads per RSTB.
        window_size: attention window at half resolution.
        mlp_ratio: Swin MLP ratio.
        qkv_bias: bias in the qkv projections.
        qk_scale: overrides ``head_dim ** -0.5``.
        drop_rate: dropout (training only).
        attn_drop_rate: attention dropout (training only).
        drop_path_rate: stochastic depth, linear over all Swin layers (training only).
        patch_norm: LayerNorm on the tokens before the RSTBs.
        resi_connection: ``'1conv'`` or ``'3conv'`` (SwinIR's options).
        pyramid: pyramid pooling before ``deconv3`` (ERRNet's ``pyramid=True``).
        pyramid_scales: average-pool sizes of the pyramid.
        hypercolumn_layers: VGG19 layers concatenated to the input (``()``: RGB only).
        vgg_weights: VGG19 weights: ``None`` = torchvision's ImageNet file ``vgg19-dcbb9e9d.pth`` from the
            weights folders (missing: a :class:`~restorer.errors.WeightsNotFoundError` saying how to get
            it); ``'random'`` = torchvision's random init from ``vgg_seed``; a file path; or a state dict.
        vgg_seed: seed of ``vgg_weights='random'``.
        vgg_in_checkpoint: register the VGG19 as the frozen sub-module ``vgg`` so that the state dict
            carries it (``vgg.features.<i>.*``); for variants whose VGG is not torchvision's (the public
            layout has no VGG keys: ``False``).
        swin_residual: apply the Swin block's residual (``False``: the public code's identity block).
        global_residual: predict ``T = relu(x + deconv3.conv2d(features))``, a correction of the input,
            with that convolution zero-initialised so that a new network returns its input (``False``,
            the public network: ``T = deconv3(features)``). Same parameters either way; needs
            ``in_chans == out_chans``. The small CPU recipe (``rrformer-small``) uses it: a short run from
            scratch that must learn the identity first loses to the untouched input.
        use_checkpoint: gradient checkpointing of the RSTBs in training.

    Shapes: ``(B, in_chans, H, W)`` in ``[0, 1]``, any ``H, W >= 1`` -> ``(B, out_chans, H, W)``, ``>= 0``.
    """

    def __init__(
        self,
        in_chans: int = 3,
        out_chans: int = 3,
        n_feats: int = 256,
        embed_dim: int = 240,
        img_size: int = 256,
        patch_size: int = 4,
        depths: Sequence[int] = (6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        resi_connection: str = "1conv",
        pyramid: bool = True,
        pyramid_scales: Sequence[int] = (4, 8, 16, 32),
        hypercolumn_layers: Sequence[str] = HYPERCOLUMN_LAYERS,
        vgg_weights: str | os.PathLike | Mapping[str, Tensor] | None = None,
        vgg_seed: int = 0,
        vgg_in_checkpoint: bool = False,
        swin_residual: bool = True,
        global_residual: bool = False,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if global_residual and in_chans != out_chans:
            raise ValueError(f"global_residual needs in_chans == out_chans, got {in_chans} and {out_chans}")
        self.global_residual = bool(global_residual)
        unknown = [name for name in hypercolumn_layers if name not in VGG19_LAYERS]
        if unknown:
            raise ValueError(
                f"unknown VGG19 layers {unknown}; use names like {', '.join(HYPERCOLUMN_LAYERS)}"
            )
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.hypercolumn_layers = tuple(sorted(hypercolumn_layers, key=lambda n: VGG19_LAYERS[n][0]))
        self._hyper_indices = tuple(VGG19_LAYERS[n][0] for n in self.hypercolumn_layers)
        self._hyper_channels = tuple(VGG19_LAYERS[n][1] for n in self.hypercolumn_layers)
        hyper_in = in_chans + sum(self._hyper_channels)
        self.vgg_in_checkpoint = bool(vgg_in_checkpoint)
        self.pyramid = pyramid
        self.pyramid_scales = tuple(pyramid_scales) if pyramid else ()

        self.conv1 = conv_layer(nn.Conv2d, hyper_in, n_feats, kernel_size=1)
        self.conv2 = conv_layer(nn.Conv2d, n_feats, n_feats, kernel_size=3)
        self.conv3 = conv_layer(nn.Conv2d, n_feats, embed_dim, kernel_size=3, stride=2)
        self.swinir_block = SwinIRBody(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            qk_scale=qk_scale,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            patch_norm=patch_norm,
            resi_connection=resi_connection,
            unused_out_chans=in_chans,
            residual=swin_residual,
            use_checkpoint=use_checkpoint,
        )
        self.deconv1 = conv_layer(nn.ConvTranspose2d, embed_dim, n_feats, kernel_size=4, stride=2, padding=1)
        self.deconv2 = conv_layer(nn.Conv2d, n_feats, n_feats, kernel_size=3)
        self.pyramid_module = (
            PyramidPooling(n_feats, n_feats, self.pyramid_scales, ct_channels=n_feats // 4)
            if pyramid
            else None
        )
        self.deconv3 = conv_layer(nn.Conv2d, n_feats, out_chans, kernel_size=1)
        if self.global_residual:
            nn.init.zeros_(self.deconv3.conv2d.weight)
            nn.init.zeros_(self.deconv3.conv2d.bias)

        vgg = None
        if self.hypercolumn_layers or self.vgg_in_checkpoint:
            last = self.hypercolumn_layers[-1] if self.hypercolumn_layers else "relu1_1"
            vgg = build_vgg19_features(vgg_weights, last, vgg_seed)
        if self.vgg_in_checkpoint:
            self.vgg = vgg
        else:
            # Not a registered sub-module: the public state dict has no VGG keys. `_apply` moves it.
            object.__setattr__(self, "_frozen_vgg", vgg)

    # -- properties the engine and the zoo read -------------------------------------------------

    @property
    def scale(self) -> int:
        return 1

    @property
    def window_multiple(self) -> int:
        """Tile size / origin multiple that keeps every pooling grid and window partition aligned:
        the pyramid's largest pool, the VGG pools (2 per max pool) and the Swin windows (2 x window)."""
        deepest = max(self._hyper_indices, default=-1)
        vgg_stride = 2 ** sum(1 for n, (i, _) in VGG19_LAYERS.items() if n.startswith("pool") and i < deepest)
        return lcm(2 * self.swinir_block.window_size, vgg_stride, *self.pyramid_scales)

    @property
    def vgg19(self) -> VGG19Features | None:
        """The frozen VGG19 of the hypercolumn (``None`` without hypercolumn layers)."""
        return self.vgg if self.vgg_in_checkpoint else self.__dict__["_frozen_vgg"]

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        frozen = self.__dict__.get("_frozen_vgg")
        if frozen is not None:
            frozen._apply(fn, recurse)
        return self

    # -- forward -------------------------------------------------------------------------------

    def embed(self, x: Tensor) -> Tensor:
        """``conv1`` (+ ReLU) over ``[x, hypercolumn(x)]``: ``(B, in_chans, H, W) -> (B, n_feats, H, W)``.

        Each VGG map is projected by its slice of the 1x1 kernel at its own resolution and then resized
        (bilinear, align_corners False) and summed: equal to the public concatenate-then-convolve.
        """
        conv = self.conv1.conv2d
        weight = conv.weight
        out = F.conv2d(x, weight[:, : self.in_chans], conv.bias)
        if self.hypercolumn_layers:
            with torch.no_grad():  # frozen and detached, as in the public model
                maps = self.vgg19(x, self._hyper_indices)
            start = self.in_chans
            for channels in self._hyper_channels:
                feature = maps.pop(0)  # drop each map once used (relu1_1 is full size)
                projected = F.conv2d(feature, weight[:, start : start + channels])
                start += channels
                if projected.shape[-2:] != out.shape[-2:]:
                    projected = F.interpolate(
                        projected, size=out.shape[-2:], mode="bilinear", align_corners=False
                    )
                out.add_(projected)  # in place: conv2d does not keep its output for backward
                del feature, projected
        return self.conv1.act(out)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x, _ = pad_to_multiple(x, 2)  # conv3 (stride 2) and deconv1 (x2) need even sizes
        feats = self.conv3(self.conv2(self.embed(x)))
        feats = self.deconv2(self.deconv1(self.swinir_block(feats)))
        if self.pyramid_module is not None:
            feats = self.pyramid_module(feats)
        if self.global_residual:
            return crop_to(F.relu(x + self.deconv3.conv2d(feats)), h, w)
        return crop_to(self.deconv3(feats), h, w)
