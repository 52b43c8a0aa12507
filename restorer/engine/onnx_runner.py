"""Run a file written by ``restorer export`` through the tiled engine, with ONNX Runtime.

:class:`OnnxModel` wraps an ``onnxruntime.InferenceSession`` so that it looks like the PyTorch network to
:func:`restorer.engine.tiling.run_tiled`: ``(1, C, h, w)`` float32 CPU tensor in, ``(1, C', h*s, w*s)``
out. :func:`build_onnx_restorer` puts it in a :class:`~restorer.engine.runner.Restorer`, so tiling,
feathering, alpha, bit depth, gray images and ``--tta`` behave exactly as with the PyTorch backend.

What the wrapper feeds the graph (see :mod:`restorer.export` for the two kinds of file):

* fixed-tile file (``T``): every input is padded at the bottom/right to ``T x T`` (reflect, then replicate
  where reflect runs out, as the models pad) and the output cropped back. The engine's tiles are ``T x T``
  already, so only an image (or a strip of one) smaller than ``T`` gets padded; such an image is then
  restored with ``T``-sized context, which can differ slightly from PyTorch's whole-image run.
* any-size file: inputs are padded to the window multiple (unless the graph pads for itself, which the
  export checked) and to at least two windows per side; tiles always match PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from restorer.archs.layers import _pad_dim
from restorer.engine.runner import Restorer, auto_tile
from restorer.engine.tiling import TileSettings
from restorer.errors import UsageError
from restorer.export import INPUT_NAME, OUTPUT_NAME, OnnxInfo, read_info, require_onnx

BACKENDS = ("auto", "torch", "onnxruntime")


def is_onnx_file(path: str | os.PathLike | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"


def resolve_backend(backend: str, weights: str | os.PathLike | None) -> str:
    """``auto`` -> ``onnxruntime`` for a ``.onnx`` weights file, else ``torch``; a one-line
    :class:`UsageError` when the backend and the file do not go together."""
    backend = (backend or "auto").lower()
    if backend not in BACKENDS:
        raise UsageError(f"Unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}.")
    onnx_file = is_onnx_file(weights)
    if backend == "auto":
        return "onnxruntime" if onnx_file else "torch"
    if backend == "onnxruntime" and not onnx_file:
        raise UsageError(
            "--backend onnxruntime runs an exported file: give --weights MODEL.onnx "
            "(made with `restorer export`)."
        )
    if backend == "torch" and onnx_file:
        raise UsageError(f"{weights} is an ONNX file: use --backend onnxruntime (or leave --backend out).")
    return backend


def _providers(device: str) -> tuple[list, str]:
    """ONNX Runtime execution providers for ``--device`` and a short name of the one used."""
    import onnxruntime as ort

    spec = (device or "auto").strip().lower()
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if spec == "cpu" or (spec == "auto" and not has_cuda):
        return ["CPUExecutionProvider"], "cpu"
    if spec == "auto":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not has_cuda:
            raise UsageError(
                f"--device {spec}: this onnxruntime has no CUDA provider (install onnxruntime-gpu), "
                "or use --device cpu."
            )
        index = int(spec.split(":", 1)[1]) if ":" in spec and spec.split(":", 1)[1].isdigit() else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"], f"cuda:{index}"
    raise UsageError(f"Unsupported device {spec!r} for ONNX Runtime; use auto, cpu, cuda or cuda:N.")


def _pad_bottom_right(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pad ``(1, C, h, w)`` to ``(1, C, height, width)``: reflect, replicate beyond (as the models do)."""
    # Row then column padding equals pad_to_multiple's one 2-D reflect pad (reflection is separable).
    return _pad_dim(_pad_dim(x, height - x.shape[-2], -2), width - x.shape[-1], -1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class OnnxModel(nn.Module):
    """An exported graph behind the interface of the PyTorch network (no parameters of its own).

    Args:
        path: the ``.onnx`` file.
        info: its metadata (:func:`restorer.export.read_info`).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (ONNX Runtime's CPU or CUDA provider).
        threads: intra-op threads (default: PyTorch's, so the two backends compare on equal terms).
    """

    def __init__(self, path: str | os.PathLike, info: OnnxInfo, device: str = "auto", threads: int = 0):
        super().__init__()
        import onnxruntime as ort

        providers, self.provider = _providers(device)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or max(1, torch.get_num_threads())
        options.log_severity_level = 3
        self.info = info
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)

    def graph_size(self, height: int, width: int) -> tuple[int, int]:
        """The input size the graph is run at for an ``height x width`` input."""
        info = self.info
        if info.tile:
            return info.tile, info.tile
        multiple = max(1, info.window_multiple)
        if info.pads_itself and height >= info.min_size and width >= info.min_size:
            return height, width
        return (
            max(_round_up(height, multiple), info.min_size),
            max(_round_up(width, multiple), info.min_size),
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, C, h, w)`` float32 -> ``(1, C', h*s, w*s)`` float32 CPU (not clamped)."""
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"expected a (1, C, H, W) tensor, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        gh, gw = self.graph_size(h, w)
        if gh < h or gw < w:
            raise UsageError(
                f"{self.path.name} takes {gh}x{gw} tiles, got a {h}x{w} input: run it with --tile {gh}."
            )
        padded = _pad_bottom_right(x.detach().float().cpu().contiguous(), gh, gw)
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: padded.numpy()})[0]
        scale = self.info.scale
        return torch.from_numpy(out)[..., : h * scale, : w * scale]


def build_onnx_restorer(
    path: str | os.PathLike,
    device: str = "auto",
    precision: str = "auto",
    tile: int | None = None,
    tile_overlap: int | None = None,
    on_message: Callable[[str], None] | None = None,
    tta: bool = False,
) -> Restorer:
    """A :class:`Restorer` that runs ``path`` with ONNX Runtime (same arguments as ``build_restorer``).

    A fixed-tile file runs at its own tile size: ``tile`` must be None or that size. Tensors stay on the
    CPU for the engine; ONNX Runtime moves them to the GPU itself with the CUDA provider.
    """
    require_onnx()
    if (precision or "auto").lower() not in ("auto", "fp32"):
        raise UsageError(f"ONNX files run in float32 (as exported); drop --precision {precision}.")
    info = read_info(path)
    entry = info.entry()
    model = OnnxModel(path, info, device)
    if info.tile:
        if tile is not None and tile != info.tile:
            raise UsageError(
                f"{Path(path).name} was exported for {info.tile}-pixel tiles; leave out --tile or give "
                f"--tile {info.tile} (`restorer export --tile N` makes a file for another size)."
            )
        tile = info.tile
    elif tile is None:
        tile = 512 if model.provider.startswith("cuda") else auto_tile(torch.device("cpu"))
    if tile < 0:
        raise UsageError(f"--tile must be 0 (whole image) or a positive size, got {tile}.")
    if tile_overlap is None:
        tile_overlap = info.tile_overlap
    if tile_overlap is not None and tile_overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, got {tile_overlap}.")
    settings = TileSettings(tile, tile_overlap)
    return Restorer(entry, model, torch.device("cpu"), torch.float32, settings, on_message, Path(path), tta)


def onnx_entry_for_task(path: str | os.PathLike, task: str | None):
    """The zoo entry an ONNX file describes, checked against ``task`` (one-line errors)."""
    require_onnx()
    info = read_info(path)
    if task is not None and info.tasks and task not in info.tasks:
        raise UsageError(
            f"{Path(path).name} is {info.display_name} x{info.scale}; it does not serve --task {task}: "
            f"use {', '.join('--task ' + t for t in info.tasks)}."
        )
    return info.entry()
