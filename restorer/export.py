"""Export the image-to-image networks (HAT, DRCT, CRAFT, DLGSANet, Restore-RWKV, RRFormer) to ONNX.

The graph maps a ``(1, C, H, W)`` float32 image in ``[0, 1]`` to ``(1, C', H*s, W*s)`` float32 (not
clamped), exactly like the PyTorch model's ``forward``. Two kinds of file:

* **any size** (``restorer.tile = 0``): height and width are dynamic axes. Only where tracing records the
  model's shape arithmetic as graph operations, which :func:`export_onnx` does not assume but checks: the
  graph must reproduce PyTorch at sizes other than the traced one.
* **fixed tile** (``restorer.tile = T``): the graph takes exactly ``T x T`` inputs. The windowed
  transformers compute their window partitions, gather orders and masks in Python from the input size
  (cached per size in eager mode), and DLGSANet's TLC windows and Restore-RWKV's WKV chunking likewise;
  traced, those become constants of one size. The tiled engine then cuts every image into ``T x T``
  tiles (see :mod:`restorer.engine.onnx_runner`).

``metadata_props`` (keys ``restorer.*``, see :class:`OnnxInfo`) record what the engine needs to run the
file without the zoo: scale, channels, padding multiple, fixed tile, default overlap, tasks.

The exporter is PyTorch's TorchScript-based one (``dynamo=False``): it needs only ``onnx``, and exports
these models in seconds. Its traces turn ``Tensor.shape`` into tensors, which the models' Python shape
logic was not written for; a fixed-size export therefore traces with concrete shapes
(:func:`_concrete_shapes`), so the Python code runs exactly as in eager mode for that one size.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from restorer.errors import RestorerError, UsageError
from restorer.zoo import ZooEntry

FORMAT_VERSION = "1"
META_PREFIX = "restorer."
INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
DEFAULT_TILE = 256  # the engine's CPU tile: the size a fixed-tile file runs at unless exported otherwise
SHAPE_MODES = ("auto", "dynamic", "fixed")
# Largest |ONNX Runtime - PyTorch| accepted in fp32 (outputs are images in [0, 1]): the graph is the same
# function; kernels only sum in another order.
TOLERANCE = 1e-4

EXPORTABLE_ARCHS = ("HAT", "DRCT", "CRAFT", "DLGSANet", "Restore_RWKV", "RRFormer")
# Architectures whose graph structure depends on the input size through Python arithmetic (so an any-size
# trace could agree with PyTorch at the probed sizes and still be wrong at others): always fixed-tile.
_SIZE_BOUND = {
    "DLGSANet": "its TLC attention windows (how many, and where) are computed in Python from the input size",
    "Restore_RWKV": "its WKV scan's chunking and the decay's 1/(H*W) are computed in Python from the "
    "input size",
}
_NOT_EXPORTABLE = {
    "S2LIC": "is a learned codec (quantised latents coded with an arithmetic coder), not an image-to-image "
    "network; only image-to-image models can be exported to ONNX",
}


class ExportError(RestorerError):
    """A model that cannot be exported, or a graph that does not reproduce the PyTorch model."""


def require_onnx() -> None:
    """Raise a one-line :class:`~restorer.errors.MissingExtraError` naming the ``[export]`` extra when
    onnx / onnxruntime are missing."""
    from restorer._compat import require_extra

    for module in ("onnx", "onnxruntime"):
        require_extra(module, "export", "ONNX support")


def check_exportable(entry: ZooEntry) -> None:
    """A one-line :class:`ExportError` for an architecture that has no ONNX form."""
    if entry.arch in _NOT_EXPORTABLE:
        raise ExportError(f"{entry.display_name} ({entry.arch}) {_NOT_EXPORTABLE[entry.arch]}.")
    if entry.arch not in EXPORTABLE_ARCHS:
        raise ExportError(
            f"{entry.display_name} ({entry.arch}) has no ONNX export; "
            f"exportable: {', '.join(EXPORTABLE_ARCHS)}."
        )


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported file says about itself (its ``metadata_props``, all strings in the file)."""

    model: str
    display_name: str
    arch: str
    scale: int
    in_channels: int
    out_channels: int
    window_multiple: int  # inputs are padded (bottom/right, reflect) to a multiple of this
    tile: int  # 0: any size; else the graph takes exactly tile x tile inputs
    min_size: int  # any-size graphs: smaller sides are padded up to this (0 for fixed-tile graphs)
    pads_itself: bool  # any-size graphs: sizes that are not window multiples run as in PyTorch (no pre-pad)
    tile_overlap: int | None  # default --tile-overlap (None: the engine's, two windows)
    tasks: tuple[str, ...]
    pad_mode: str = "reflect"
    weights: str = ""  # name of the checkpoint the graph was made from
    max_abs_diff: float | None = None  # |ONNX Runtime - PyTorch| measured at export time
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def dynamic(self) -> bool:
        return self.tile == 0

    def to_props(self) -> dict[str, str]:
        props = {
            "format_version": FORMAT_VERSION,
            "model": self.model,
            "display_name": self.display_name,
            "arch": self.arch,
            "scale": str(self.scale),
            "in_channels": str(self.in_channels),
            "out_channels": str(self.out_channels),
            "window_multiple": str(self.window_multiple),
            "tile": str(self.tile),
            "min_size": str(self.min_size),
            "pads_itself": "1" if self.pads_itself else "0",
            "tile_overlap": "" if self.tile_overlap is None else str(self.tile_overlap),
            "tasks": ",".join(self.tasks),
            "pad_mode": self.pad_mode,
            "weights": self.weights,
            "max_abs_diff": "" if self.max_abs_diff is None else f"{self.max_abs_diff:.3g}",
            **self.extra,
        }
        return {META_PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the file") -> OnnxInfo:
        """Parse ``restorer.*`` metadata; a one-line :class:`UsageError` for files from elsewhere."""
        ours = {k[len(META_PREFIX) :]: v for k, v in props.items() if k.startswith(META_PREFIX)}
        if not ours:
            raise UsageError(
                f"{source} has no restorer metadata: only ONNX files written by `restorer export` can run "
                "(they record the scale, channels and tile size)."
            )
        if ours.get("format_version") != FORMAT_VERSION:
            raise UsageError(
                f"{source} was exported in restorer ONNX format {ours.get('format_version')!r}; this "
                f"version reads format {FORMAT_VERSION}: export it again."
            )
        try:
            overlap = ours.get("tile_overlap", "")
            diff = ours.get("max_abs_diff", "")
            known = set(cls.__dataclass_fields__) | {"format_version"}
            return cls(
                model=ours["model"],
                display_name=ours.get("display_name", ours["model"]),
                arch=ours["arch"],
                scale=int(ours["scale"]),
                in_channels=int(ours["in_channels"]),
                out_channels=int(ours["out_channels"]),
                window_multiple=int(ours["window_multiple"]),
                tile=int(ours["tile"]),
                min_size=int(ours.get("min_size") or 0),
                pads_itself=ours.get("pads_itself") == "1",
                tile_overlap=int(overlap) if overlap else None,
                tasks=tuple(t for t in ours.get("tasks", "").split(",") if t),
                pad_mode=ours.get("pad_mode", "reflect"),
                weights=ours.get("weights", ""),
                max_abs_diff=float(diff) if diff else None,
                extra={k: v for k, v in ours.items() if k not in known},
            )
        except (KeyError, ValueError) as exc:
            raise UsageError(f"{source} has incomplete restorer metadata ({exc}): export it again.") from None

    def entry(self) -> ZooEntry:
        """A zoo entry built from the metadata alone (the file runs without its model in the zoo)."""
        return ZooEntry(
            model=self.model,
            display_name=self.display_name,
            arch=self.arch,
            scale=self.scale,
            network_g={},
            weight_file=self.weights,
            param_key="",
            published="an ONNX file exported by `restorer export`",
            paper="",
            window_multiple=self.window_multiple,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            pad_mode=self.pad_mode,
            tile_overlap=self.tile_overlap,
            cpu_tile=self.tile or None,
            tasks=self.tasks,
        )

    @classmethod
    def from_entry(cls, entry: ZooEntry, tile: int, weights: str = "", pads_itself: bool = False) -> OnnxInfo:
        return cls(
            model=entry.model,
            display_name=entry.display_name,
            arch=entry.arch,
            scale=entry.scale,
            in_channels=entry.in_channels,
            out_channels=entry.out_channels,
            window_multiple=entry.window_multiple,
            tile=tile,
            min_size=0 if tile else min_dynamic_size(max(1, entry.window_multiple)),
            pads_itself=pads_itself and not tile,
            tile_overlap=entry.tile_overlap,
            tasks=tuple(entry.tasks),
            pad_mode=entry.pad_mode,
            weights=weights,
        )


def read_info(path: str | os.PathLike) -> OnnxInfo:
    """The :class:`OnnxInfo` of an exported file (reads the graph's header, not its weights)."""
    require_onnx()
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a truncated or foreign file: protobuf's errors are not user-facing
        raise UsageError(f"{path} is not a readable ONNX file ({type(exc).__name__}).") from None
    return OnnxInfo.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote: the file, its metadata, and how it was checked."""

    path: Path
    info: OnnxInfo
    checked: tuple[tuple[int, int], ...]  # (H, W) input sizes compared against PyTorch
    max_abs_diff: float
    fixed_reason: str = ""  # why the file takes one tile size ("" for an any-size file)


@contextlib.contextmanager
def _concrete_shapes() -> Iterator[None]:
    """While tracing, make ``Tensor.shape`` / ``size()`` / ``numel()`` plain ints, as in eager mode.

    The tracer hands out sizes as 0-d tensors so that shape arithmetic is recorded; the models' Python
    code (window partitions built and cached per size, ``start += n`` on group offsets, loops over TLC
    windows) then misbehaves. With ints the trace follows the eager code path for the traced size, and
    the graph is valid for that size only: the fixed-tile export. Restored on exit, also after errors.
    """
    base = torch._C.TensorBase
    get_shape = base.__dict__["shape"].__get__
    base_size, base_numel = base.size, base.numel

    def shape(self: torch.Tensor) -> torch.Size:
        return torch.Size([int(d) for d in get_shape(self)])

    def size(self: torch.Tensor, dim: int | None = None):
        if dim is None:
            return torch.Size([int(d) for d in base_size(self)])
        return int(base_size(self, dim))

    def numel(self: torch.Tensor) -> int:
        return int(base_numel(self))

    torch.Tensor.shape = property(shape)  # type: ignore[method-assign,assignment]
    torch.Tensor.size = size  # type: ignore[method-assign,assignment]
    torch.Tensor.numel = numel  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        del torch.Tensor.shape, torch.Tensor.size, torch.Tensor.numel


def _export_ready(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in fp32 eval mode with the same math in forms the exporter can record.

    Restore-RWKV's Omni-Shift fuses its four kernels into one 5x5 kernel on every call; the exporter
    needs a convolution's weight shape, which a computed weight does not carry, so the fused kernel is
    written into the (identical) ``conv5x5_reparam`` convolution once and that runs instead.
    """
    model = copy.deepcopy(model).float().eval().requires_grad_(False)
    from restorer.archs.restore_rwkv_arch import OmniShift

    for module in model.modules():
        if isinstance(module, OmniShift):
            module.reparameterize()
            module.forward = lambda x, conv=module.conv5x5_reparam: conv(x)  # type: ignore[method-assign]
    return model


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """Send file descriptor 1 to /dev/null: when a trace fails, the TorchScript exporter prints the whole
    traced graph (thousands of lines) to C++ stdout, whatever its ``verbose``; the exception says enough."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _trace_to_bytes(model: nn.Module, example: torch.Tensor, dynamic: bool, opset: int) -> bytes:
    buffer = io.BytesIO()
    axes = {INPUT_NAME: {2: "height", 3: "width"}, OUTPUT_NAME: {2: "out_height", 3: "out_width"}}
    shapes = contextlib.nullcontext() if dynamic else _concrete_shapes()
    with warnings.catch_warnings(), torch.no_grad(), shapes, _native_stdout_silenced():
        # TracerWarnings (Python values baked into the graph) are expected; the result is checked instead.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, seconds instead of minutes
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes if dynamic else None,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _session(graph: bytes | str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 4  # probes may fail on purpose: the exception says why, no log lines
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def _compare(model: nn.Module, session, sizes, channels: int, seed: int) -> float:
    """Largest |ONNX Runtime - PyTorch| over random ``(1, channels, H, W)`` inputs of the given sizes."""
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(1, channels, h, w, generator=gen)
        with torch.no_grad():
            expected = model(x).float().numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"ONNX output {got.shape} != PyTorch output {expected.shape} at {h}x{w}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _reproduces(model: nn.Module, graph: bytes, size: tuple[int, int], entry: ZooEntry, seed: int) -> bool:
    """Whether the graph reproduces PyTorch at ``size`` (False where it fails or differs there)."""
    try:
        return _compare(model, _session(graph), (size,), entry.in_channels, seed) <= TOLERANCE
    except Exception:  # e.g. a reshape baked for window multiples: the engine then pads first
        return False


def _odd_size(tile: int, multiple: int) -> tuple[int, int]:
    """A size that is not a window multiple on either side (the model's own padding must then run)."""
    low = min_dynamic_size(multiple)
    return (low + 1, tile + multiple - 1)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def min_dynamic_size(multiple: int) -> int:
    """Smallest side an any-size graph is run at: two windows. With one window per side the shifted-window
    partitions lose groups (different graph structure); the engine pads smaller inputs up to this."""
    return 2 * multiple


def _probe_sizes(tile: int, multiple: int) -> tuple[tuple[int, int], ...]:
    """Input sizes an any-size graph must reproduce PyTorch at: the traced one, then the smallest side
    against a wider one and a taller one against a narrow one (window counts the trace did not see)."""
    low = min_dynamic_size(multiple)
    return ((tile, tile), (low, tile + multiple), (tile + 3 * multiple, low + multiple))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def export_onnx(
    model: nn.Module,
    entry: ZooEntry,
    path: str | os.PathLike,
    *,
    tile: int = DEFAULT_TILE,
    shape: str = "auto",
    opset: int = DEFAULT_OPSET,
    weights_name: str = "",
    seed: int = 0,
) -> ExportResult:
    """Export ``model`` (``entry``'s network, weights loaded) to ``path`` and check it with ONNX Runtime.

    Args:
        model: the PyTorch network in fp32 on the CPU; not modified (a copy is prepared for export).
        entry: its zoo entry (scale, channels, padding multiple, tasks).
        path: the ``.onnx`` file to write (atomically: a failed export leaves no file).
        tile: the traced input size ``T`` (``(1, C, T, T)``), rounded up to the padding multiple; for a
            fixed-tile file, the only size the graph takes.
        shape: ``auto`` (any size if the graph reproduces PyTorch at other sizes, else fixed),
            ``dynamic`` (any size or an error) or ``fixed``.
        opset: ONNX opset.
        weights_name: recorded in the metadata (the checkpoint's file name).
        seed: seed of the random check inputs.

    Returns:
        :class:`ExportResult`; ``max_abs_diff`` is the largest |ONNX Runtime - PyTorch| on random inputs
        at every checked size (at most :data:`TOLERANCE`, or :class:`ExportError`).
    """
    require_onnx()
    import onnx

    check_exportable(entry)
    if shape not in SHAPE_MODES:
        raise UsageError(f"Unknown shape mode {shape!r}; choose one of: {', '.join(SHAPE_MODES)}.")
    if tile < 1:
        raise UsageError(f"--tile must be a positive size for ONNX export, got {tile}.")
    multiple = max(1, entry.window_multiple)
    tile = _round_up(tile, multiple)
    ready = _export_ready(model)
    reference = model.eval()
    example = torch.rand(1, entry.in_channels, tile, tile, generator=torch.Generator().manual_seed(seed))

    graph, fixed_reason, checked, diff = None, "", ((tile, tile),), float("inf")
    pads_itself = False
    if shape == "fixed":
        fixed_reason = "a fixed size was asked for"
    elif entry.arch in _SIZE_BOUND:
        fixed_reason = _SIZE_BOUND[entry.arch]
        if shape == "dynamic":
            raise ExportError(f"{entry.display_name} cannot be exported for any input size: {fixed_reason}.")
    else:
        sizes = _probe_sizes(tile, multiple)
        try:
            graph = _trace_to_bytes(ready, example, dynamic=True, opset=opset)
            diff = _compare(reference, _session(graph), sizes, entry.in_channels, seed + 1)
            if diff > TOLERANCE:
                fixed_reason = f"the any-size graph differs from PyTorch by {diff:.2g} at other sizes"
            checked = sizes
            if not fixed_reason and multiple > 1:
                pads_itself = _reproduces(reference, graph, _odd_size(tile, multiple), entry, seed + 2)
                checked = (*sizes, _odd_size(tile, multiple)) if pads_itself else sizes
        except Exception as exc:  # tracing or running the any-size graph failed: say why, try fixed
            fixed_reason = f"the any-size graph failed ({_first_line(exc)})"
        if fixed_reason:
            if shape == "dynamic":
                raise ExportError(
                    f"{entry.display_name} cannot be exported for any input size: {fixed_reason}."
                )
            graph = None
    if graph is None:
        try:
            graph = _trace_to_bytes(ready, example, dynamic=False, opset=opset)
            checked = ((tile, tile),)
            diff = _compare(reference, _session(graph), checked, entry.in_channels, seed + 1)
        except RestorerError:
            raise
        except Exception as exc:
            message = f"{entry.display_name} could not be exported to ONNX: {_first_line(exc)}"
            raise ExportError(message) from None
        if diff > TOLERANCE:
            raise ExportError(
                f"The ONNX graph of {entry.display_name} differs from PyTorch by {diff:.3g} "
                f"(more than {TOLERANCE:g}); nothing was written."
            )
    dynamic = not fixed_reason
    info = OnnxInfo.from_entry(entry, 0 if dynamic else tile, weights_name, pads_itself)
    info = OnnxInfo(**{**info.__dict__, "max_abs_diff": diff})
    proto = onnx.load_from_string(graph)
    del proto.metadata_props[:]
    for key, value in info.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = f"{entry.display_name} x{entry.scale}, exported by restorer"
    target = Path(path)
    _write_atomically(target, proto.SerializeToString())
    return ExportResult(target, info, tuple(checked), diff, fixed_reason)


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
