"""Generate the fuzz inputs of issue 21 ("Nothing lost, nothing silent") and what each must do.

Run as a script (``python tests/fuzz/make_fuzz_inputs.py DIR``) it writes every case into ``DIR``:
one folder per CLI invocation (``DIR/<invocation>/in/...``, the output going to ``<invocation>/out``),
the tiny random-init weights the invocations use (``DIR/weights``) and ``DIR/manifest.json``, which
lists each invocation's ``argv``, expected exit status and cases: an input path, its class, its SHA-256,
and whether it must be *written* (an output that decodes, with the expected size, channels, alpha and
bit depth) or *failed* (named in the failure summary, with no output). ``tests/test_fuzz.py`` imports
it: :func:`plan` lists the cases without writing anything (cheap, for test collection) and
:func:`generate` writes them. Everything is deterministic: the same bytes on every run, on one machine
(the ``.s2l`` files and weights come from fixed seeds).

The classes: zero-byte files; truncated PNG, JPEG, WebP, TIFF and BMP at several cut points; JPEGs whose
frame header declares more than their data holds; decompression bombs (tiny files declaring huge
canvases); odd but valid formats (16-bit, gray+alpha, palette, CMYK, float TIFF, EXIF-rotated, 1x1)
that must be written; garbage with image suffixes; symbolic links (to files, folders, devices,
dangling, loops); FIFOs; inputs sharing an output name; corrupt ``.s2l`` files for ``decompress``;
damaged DICOM and NIfTI files for a medical task; and malicious pickles given as ``--weights``.
Invocations are batched (one mixed folder per class where possible) so a run takes a few CLI calls;
a case that may hang or take the whole process down gets its own invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TESTS_DIR = Path(__file__).resolve().parents[1]

WRITTEN = "written"
"""The input must be restored: one output file, complete and decodable, with the expected properties."""
FAILED = "failed"
"""The input must be reported in the end-of-batch failure summary, and have no output."""
ERROR = "error"
"""The whole command must stop with a one-line ``error:`` (exit status 1 or 2) and write nothing."""

BOMB_MESSAGE = r"limit|needs about|available|decompression bomb|voxels"
"""What a refusal of an oversized input says (the pixel limit, the memory budget, the voxel limit); the
generic "not enough memory for this file" of a caught MemoryError does not count: the size must be
refused before anything that large is allocated."""

HAT = ["--task", "sr_x2", "-m", "tiny-hat", "-q"]
"""``restorer infer`` with the tiny HAT x2 (random init) the fuzz weights folder holds."""


@dataclass
class Case:
    """One fuzz input and what the command must do with it."""

    id: str
    cls: str
    path: str
    """The input, relative to its invocation's folder (what is hashed before and after)."""
    expect: str
    make: Callable[[Path, Context], None] | None = None
    """Writes the input at the given path; None when another case's maker or the setup makes it."""
    output: str | None = None
    """Written: the output path without extension, relative to the invocation folder (a folder or a
    file with a fixed name when ``output_exact``). Failed: the path that must not exist."""
    output_exact: bool = False
    props: dict = field(default_factory=dict)
    """Written: expected ``size`` [h, w], ``channels``, ``alpha``, ``bit_depth`` of the output."""
    reported: str | None = None
    """Failed: the path the failure summary names (default: ``path``)."""
    message: str | None = None
    """Failed: a regular expression the failure message must match."""
    xfail: str | None = None
    """A known product bug: the reason (the case is an ``xfail(strict=True)`` regression test)."""


@dataclass
class Invocation:
    """One CLI call over some cases, run in ``<root>/<name>`` (the current folder of the call)."""

    name: str
    argv: list[str]
    cases: list[Case]
    rc: int
    timeout: float = 60.0
    setup: Callable[[Path, Context], None] | None = None
    limits: dict = field(default_factory=dict)
    """Limits the driver lowers for this call: ``max_image_pixels``, ``available_memory`` (bytes)."""
    marker: str | None = None
    """A file (relative to the invocation folder) that must never exist (the malicious pickles')."""
    xfail: str | None = None
    canary: bool = False
    """A call that breaks a rule on purpose (writes outside ``out``): proof that the harness sees it."""
    together: str | None = None
    """Invocations of one group run at the same time (calls over single special files, which mostly wait
    or fail at once); what one writes into another's ``out`` is then not told apart."""


@dataclass
class Context:
    """What makers share: the root folder and things made once (weights, a valid .s2l file)."""

    root: Path
    cache: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------------


def _seed(text: str) -> int:
    return zlib.crc32(text.encode())


def noise(height: int, width: int, channels: int, seed: str, dtype=np.uint8) -> np.ndarray:
    """Smooth gradient plus noise (JPEG-compressible, still every pixel different), ``H x W x C``."""
    rng = np.random.default_rng(_seed(seed))
    top = 255 if dtype == np.uint8 else 65535
    ramp = np.linspace(0, 1, height * width).reshape(height, width, 1)
    values = 0.6 * ramp + 0.4 * rng.random((height, width, channels))
    return np.round(values * top).astype(dtype)


def pil_bytes(
    array: np.ndarray, fmt: str, mode: str | None = None, convert: str | None = None, **save
) -> bytes:
    from PIL import Image

    array = array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array
    image = Image.fromarray(array, mode) if mode else Image.fromarray(array)
    if convert:
        image = image.convert(convert)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def raw_png(
    samples: np.ndarray,
    color_type: int,
    *,
    interlace: bool = False,
    extra: bytes = b"",
    size: tuple[int, int] | None = None,
    idat: bytes | None = None,
) -> bytes:
    """A PNG written chunk by chunk: 8/16-bit ``samples`` (``H x W x C``) of any colour type, optionally
    Adam7-interlaced; ``extra`` chunks go before IDAT. ``size`` (w, h) and ``idat`` override the header's
    size and the compressed data (for inconsistent files)."""
    height, width = samples.shape[:2]
    depth = 16 if samples.dtype == np.uint16 else 8
    big = samples.astype(">u2") if depth == 16 else samples

    def rows(block: np.ndarray) -> bytes:
        if block.size == 0:
            return b""
        flat = block.reshape(block.shape[0], -1)
        return b"".join(b"\x00" + row.tobytes() for row in flat)

    if idat is None:
        if interlace:
            raw = b"".join(rows(big[y0::dy, x0::dx]) for x0, y0, dx, dy in _ADAM7)
        else:
            raw = rows(big)
        idat = zlib.compress(raw, 9)
    w, h = size or (width, height)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 1 if interlace else 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_gray4(height: int, width: int, seed: str) -> bytes:
    """A 4-bit gray PNG (two pixels a byte)."""
    values = noise(height, width, 1, seed)[:, :, 0] >> 4
    if width % 2:
        values = np.pad(values, ((0, 0), (0, 1)))
    packed = (values[:, 0::2] << 4) | values[:, 1::2]
    raw = b"".join(b"\x00" + row.astype(np.uint8).tobytes() for row in packed)
    ihdr = struct.pack(">IIBBBBB", width, height, 4, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


def cv2_bytes(array: np.ndarray, ext: str) -> bytes:
    import cv2

    bgr = array[:, :, ::-1] if array.ndim == 3 and array.shape[2] == 3 else array
    ok, data = cv2.imencode(ext, np.ascontiguousarray(bgr))
    assert ok
    return data.tobytes()


def tiff_bytes(array: np.ndarray, **options) -> bytes:
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def jpeg_bytes(height: int, width: int, seed: str, channels: int = 3, **save) -> bytes:
    array = noise(height, width, channels, seed)
    return pil_bytes(array, "JPEG", quality=save.pop("quality", 90), **save)


def exif_jpeg(orientation: int, seed: str) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(noise(20, 28, 3, seed), "JPEG", quality=90, exif=exif.tobytes())


def patch_jpeg_frame(
    data: bytes, height: int | None = None, width: int | None = None, components: int | None = None
) -> bytes:
    """Change the SOF (frame) header of a JPEG: the declared size or component count."""
    position = 2
    while position < len(data) - 4:
        marker = data[position + 1]
        length = struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out = bytearray(data)
            if height is not None:
                out[position + 5 : position + 7] = struct.pack(">H", height)
            if width is not None:
                out[position + 7 : position + 9] = struct.pack(">H", width)
            if components is not None:
                out[position + 9] = components
            return bytes(out)
        position += 2 + length
    raise ValueError("no SOF marker")


def webp_lossless(height: int, width: int, seed: str, alpha: bool = False) -> bytes:
    return pil_bytes(noise(height, width, 4 if alpha else 3, seed), "WEBP", lossless=True)


def patch_webp_size(data: bytes, width: int, height: int) -> bytes:
    """Declare another canvas in a lossless (VP8L) or lossy (VP8) WebP's bitstream header."""
    out = bytearray(data)
    kind = bytes(out[12:16])
    if kind == b"VP8L":
        bits = int.from_bytes(out[21:25], "little")
        bits = (bits & ~0xFFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
        out[21:25] = bits.to_bytes(4, "little")
    elif kind == b"VP8 ":
        out[26:28] = struct.pack("<H", width & 0x3FFF)
        out[28:30] = struct.pack("<H", height & 0x3FFF)
    else:
        raise ValueError(f"unexpected WebP chunk {kind!r}")
    return bytes(out)


def webp_vp8x_canvas(inner: bytes, width: int, height: int) -> bytes:
    """Wrap a simple WebP's image chunk in the extended layout whose VP8X chunk declares another canvas."""
    image_chunk = inner[12:]
    vp8x = bytes((0, 0, 0, 0)) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x + image_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_animated(inner: bytes, width: int, height: int) -> bytes:
    """A valid animated WebP: a ``width x height`` canvas (VP8X + ANIM) holding one frame, ``inner``'s
    image, at the top left. Decoders allocate the whole canvas."""
    image_chunk = inner[12:]
    frame_w, frame_h = _webp_canvas_size(inner)
    vp8x = bytes((0x02, 0, 0, 0)) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    anim = bytes(4) + struct.pack("<H", 0)  # background colour, loop count
    anmf = bytes(6) + (frame_w - 1).to_bytes(3, "little") + (frame_h - 1).to_bytes(3, "little")
    anmf += (100).to_bytes(3, "little") + bytes(1) + image_chunk
    chunks = [(b"VP8X", vp8x), (b"ANIM", anim), (b"ANMF", anmf)]
    body = b"WEBP" + b"".join(k + struct.pack("<I", len(d)) + d + b"\x00" * (len(d) & 1) for k, d in chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_canvas_size(data: bytes) -> tuple[int, int]:
    bits = int.from_bytes(data[21:25], "little")  # VP8L: 14-bit width - 1, 14-bit height - 1
    return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1


def tiff_giant(width: int, height: int) -> bytes:
    """A little-endian TIFF whose one strip claims ``width x height`` 8-bit gray pixels; holds 64 bytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets: right after the IFD
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, width * height if width * height < 2**32 else 2**32 - 1),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(64)


def bmp_giant(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width x height`` followed by 64 bytes of pixels."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    body = header + bytes(64)
    return b"BM" + struct.pack("<IHHI", 14 + len(body), 0, 0, 54) + body


def garbage(size: int, seed: str, prefix: bytes = b"") -> bytes:
    rng = np.random.default_rng(_seed(seed))
    return prefix + rng.integers(0, 256, size, dtype=np.uint8).tobytes()


# ---------------------------------------------------------------------------------------------------
# Makers (functions of the target path and the context)
# ---------------------------------------------------------------------------------------------------


def _write(data: bytes | Callable[[], bytes]) -> Callable[[Path, Context], None]:
    def make(path: Path, ctx: Context) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data() if callable(data) else data)

    return make


def _lazy(function: Callable[..., bytes], *args, **kwargs) -> Callable[[Path, Context], None]:
    return _write(functools.partial(function, *args, **kwargs))


def _truncated(function: Callable[[], bytes], cut: float | int) -> Callable[[Path, Context], None]:
    """The first ``cut`` bytes (an int) or that fraction of the file (a float) of ``function()``."""

    def data() -> bytes:
        whole = function()
        keep = cut if isinstance(cut, int) else int(len(whole) * cut)
        if keep < 0:
            keep = len(whole) + keep
        assert 0 < keep < len(whole), (keep, len(whole))
        return whole[:keep]

    return _write(data)


def _symlink(target: str) -> Callable[[Path, Context], None]:
    def make(path: Path, ctx: Context) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    return make


def _fifo(path: Path, ctx: Context) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def _good(name: str) -> tuple[Callable[[Path, Context], None], dict]:
    """A small valid image for a mixed folder, in the format of ``name``'s suffix, and its output props."""
    suffix = Path(name).suffix.lower()
    h, w = 18 + _seed(name) % 7, 22 + _seed(name + "w") % 9
    array = noise(h, w, 3, name)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".bmp": "BMP"}[
        suffix
    ]
    save = {"quality": 90} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    return _lazy(pil_bytes, array, fmt, **save), {"size": [2 * h, 2 * w], "channels": 3, "alpha": False}


def _written(
    cls: str, name: str, make, props: dict, folder: str = "in", out: str = "out", xfail: str | None = None
) -> Case:
    stem = Path(name).stem
    return Case(
        f"{cls}/{name}", cls, f"{folder}/{name}", WRITTEN, make, f"{out}/{stem}_out", props=props, xfail=xfail
    )


def _failed(
    cls: str,
    name: str,
    make,
    folder: str = "in",
    out: str = "out",
    message: str | None = None,
    xfail: str | None = None,
    case_id: str | None = None,
) -> Case:
    stem = Path(name).stem
    return Case(
        case_id or f"{cls}/{name}",
        cls,
        f"{folder}/{name}",
        FAILED,
        make,
        f"{out}/{stem}_out",
        message=message,
        xfail=xfail,
    )


def _goods(
    cls: str, group: str | None = None, names: tuple[str, ...] = ("good_a.png", "good_b.jpg")
) -> list[Case]:
    """Valid images for a mixed folder (every one must be written whatever else the folder holds)."""
    cases = []
    for name in names:
        make, props = _good(f"{group or cls}-{name}")
        case = _written(cls, name, make, props)
        case.id = f"{group or cls}/{name}"
        cases.append(case)
    return cases


def _infer(
    cases: list[Case], name: str, *extra: str, inputs: tuple[str, ...] = ("in",), **options
) -> Invocation:
    rc = 1 if any(case.expect == FAILED for case in cases) else 0
    return Invocation(
        name, ["infer", *HAT, *inputs, "-o", "out", *extra], cases, options.pop("rc", rc), **options
    )


# ---------------------------------------------------------------------------------------------------
# The classes
# ---------------------------------------------------------------------------------------------------

_SUFFIXES = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "PNG", "JPG", "TIFF")


def zero_byte() -> list[Invocation]:
    cases = [
        _failed("zero_byte", f"zero_{s.lower()}{i}.{s}", _write(b""), message="empty")
        for i, s in enumerate(_SUFFIXES)
    ]
    return [_infer(cases + _goods("zero_byte"), "zero_byte")]


def _truncation_sources() -> dict[str, Callable[[], bytes]]:
    h, w = 32, 48
    rgb = functools.partial(noise, h, w, 3)
    return {
        "png-rgb8": lambda: pil_bytes(rgb("t-png"), "PNG"),
        "png-rgb16": lambda: cv2_bytes(noise(h, w, 3, "t-png16", np.uint16), ".png"),
        "png-interlaced": lambda: raw_png(rgb("t-adam7"), 2, interlace=True),
        "png-palette": lambda: pil_bytes(rgb("t-pal"), "PNG", convert="P"),
        "jpg-baseline": lambda: jpeg_bytes(h, w, "t-jpg"),
        "jpg-progressive": lambda: jpeg_bytes(h, w, "t-prog", progressive=True),
        "jpg-gray": lambda: jpeg_bytes(h, w, "t-jgray", channels=1),
        "webp-lossy": lambda: pil_bytes(rgb("t-webp"), "WEBP", quality=80),
        "webp-lossless": lambda: webp_lossless(h, w, "t-webpl"),
        "tif-raw": lambda: pil_bytes(rgb("t-tif"), "TIFF"),
        "tif-lzw": lambda: pil_bytes(rgb("t-lzw"), "TIFF", compression="tiff_lzw"),
        "tif-rgb16": lambda: tiff_bytes(noise(h, w, 3, "t-tif16", np.uint16), photometric="rgb"),
        "bmp-rgb": lambda: pil_bytes(rgb("t-bmp"), "BMP"),
    }


_CUTS = (8, 30, 0.25, 0.5, 0.75, 0.95)
"""Cut points: inside the signature / first header, just after it, then fractions of the file (all
before the last pixel data: the end of each file holds pixels, or for TIFF the IFD that points at them)."""


def truncated() -> list[Invocation]:
    cases = []
    for kind, source in _truncation_sources().items():
        ext = kind.split("-")[0]
        for cut in _CUTS:
            label = f"{int(cut * 100)}pct" if isinstance(cut, float) else f"{cut}b"
            cases.append(_failed("truncated", f"{kind}-{label}.{ext}", _truncated(source, cut)))
    return [_infer(cases + _goods("truncated"), "truncated", timeout=90)]


def header_inconsistent_jpeg() -> list[Invocation]:
    # 32 x 48: whole 4:2:0 MCUs (16 x 16), so any larger frame needs entropy-coded data the file lacks
    base = functools.partial(jpeg_bytes, 32, 48, "hj")
    gray = functools.partial(jpeg_bytes, 32, 48, "hj-gray", channels=1)
    prog = functools.partial(jpeg_bytes, 32, 48, "hj-prog", progressive=True)
    variants = {
        "height-x2": (base, {"height": 64}),
        "width-x2": (base, {"width": 96}),
        "both-x2": (base, {"height": 64, "width": 96}),
        "height-plus8": (base, {"height": 40}),
        "height-plus1": (base, {"height": 33}),
        "width-plus16": (base, {"width": 64}),
        "huge-4096": (base, {"height": 4096, "width": 4096}),
        "gray-height-x2": (gray, {"height": 64}),
        "gray-width-plus8": (gray, {"width": 56}),
        "progressive-height-x2": (prog, {"height": 64}),
        "progressive-width-x2": (prog, {"width": 96}),
        "height-zero": (base, {"height": 0}),
        "width-zero": (base, {"width": 0}),
        "three-components-as-one": (base, {"components": 1}),
    }
    cases = [
        _failed(
            "header_jpeg",
            f"{name}.jpg",
            _write(functools.partial(lambda f, k: patch_jpeg_frame(f(), **k), f, kw)),
        )
        for name, (f, kw) in variants.items()
    ]
    return [_infer(cases + _goods("header_jpeg"), "header_jpeg")]


def _giant_png(width: int, height: int, color_type: int = 2, depth: int = 8) -> bytes:
    """A PNG whose IHDR declares ``width x height`` and whose IDAT holds one short row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    idat = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _zeros_png(side: int) -> bytes:
    """A real bomb: a valid ``side x side`` gray PNG of zeros (a few kilobytes)."""
    raw = bytes(side * (side + 1))
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def _flat(fmt: str, side: int, **save) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L" if fmt == "TIFF" else "RGB", (side, side), 7).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def bombs() -> list[Invocation]:
    giant = {  # tiny files declaring huge canvases (default limits; the data does not fill them)
        "png-100000x100000.png": functools.partial(_giant_png, 100_000, 100_000),
        "png-16383x16383-under-pixel-limit.png": functools.partial(_giant_png, 16383, 16383),
        "png-gray16-20000x20000.png": functools.partial(_giant_png, 20_000, 20_000, 0, 16),
        "png-1bit-60000x60000.png": functools.partial(_giant_png, 60_000, 60_000, 0, 1),
        "png-rgba-2147483647x1.png": functools.partial(_giant_png, 2**31 - 1, 1, 6),
        "webp-lossless-16383x16383.webp": lambda: patch_webp_size(
            webp_lossless(16, 16, "bomb"), 16383, 16383
        ),
        "webp-lossy-16383x16383.webp": lambda: patch_webp_size(
            pil_bytes(noise(16, 16, 3, "bomb-l"), "WEBP", quality=80), 16383, 16383
        ),
        "webp-animated-canvas-16383x16383.webp": lambda: webp_animated(
            webp_lossless(16, 16, "bomb-a"), 16383, 16383
        ),
        "webp-animated-canvas-16777216x255.webp": lambda: webp_animated(
            webp_lossless(16, 16, "bomb-b"), 2**24, 255
        ),
        "jpg-65500x65500.jpg": lambda: patch_jpeg_frame(jpeg_bytes(16, 16, "bomb-j"), 65500, 65500),
        "tif-100000x100000.tif": functools.partial(tiff_giant, 100_000, 100_000),
        "tif-16000x16000.tif": functools.partial(tiff_giant, 16_000, 16_000),
        "bmp-30000x30000.bmp": functools.partial(bmp_giant, 30_000, 30_000),
    }
    cases = [
        _failed(
            "bomb",
            name,
            _write(f),
            message=BOMB_MESSAGE,
        )
        for name, f in giant.items()
    ]
    # a still image whose VP8X canvas disagrees with its bitstream: the decoder refuses the header itself
    vp8x = _failed(
        "bomb",
        "webp-vp8x-canvas-16777216.webp",
        _write(lambda: webp_vp8x_canvas(webp_lossless(16, 16, "bomb-x"), 2**24, 2**24)),
    )
    cases.append(vp8x)
    invocations = [_infer(cases + _goods("bomb", "bomb_giant"), "bomb_giant")]
    real = {  # valid files of a few kilobytes that decode to megapixels; the pixel limit is lowered
        "png-zeros-2048.png": functools.partial(_zeros_png, 2048),
        "webp-flat-2048.webp": functools.partial(_flat, "WEBP", 2048, lossless=True),
        "jpg-flat-2048.jpg": functools.partial(_flat, "JPEG", 2048, quality=50),
        "tif-lzw-flat-2048.tif": functools.partial(_flat, "TIFF", 2048, compression="tiff_lzw"),
        "bmp-rle-like-1100.bmp": functools.partial(_flat, "BMP", 1100),
    }
    cases = [_failed("bomb", name, _write(f), message=BOMB_MESSAGE) for name, f in real.items()]
    invocations.append(
        _infer(cases + _goods("bomb", "bomb_real"), "bomb_real", limits={"max_image_pixels": 2**20})
    )
    # the memory budget (restorer/engine/budget.py): a 1024 x 1024 PNG needs ~150 MB at x2; 64 MB "free"
    cases = [_failed("bomb", "png-zeros-1024-budget.png", _lazy(_zeros_png, 1024), message=BOMB_MESSAGE)]
    invocations.append(
        _infer(cases + _goods("bomb", "bomb_budget"), "bomb_budget", limits={"available_memory": 64 << 20})
    )
    return invocations


def _odd_valid() -> dict[str, tuple[Callable[[], bytes], dict]]:
    """Unusual but valid files: (bytes, expected output props: upright size x2, channels, alpha, depth)."""
    from PIL import Image

    h, w = 20, 28
    rgb8, rgba8 = noise(h, w, 3, "o-rgb"), noise(h, w, 4, "o-rgba")
    gray8, ga8 = noise(h, w, 1, "o-gray"), noise(h, w, 2, "o-ga")
    rgb16, rgba16 = noise(h, w, 3, "o-rgb16", np.uint16), noise(h, w, 4, "o-rgba16", np.uint16)
    gray16, ga16 = noise(h, w, 1, "o-gray16", np.uint16), noise(h, w, 2, "o-ga16", np.uint16)
    size = [2 * h, 2 * w]
    turned = [2 * w, 2 * h]

    def props(channels=3, alpha=False, depth=8, upright=size):
        # gray + alpha stays two channels in PNG and TIFF (all these gray + alpha inputs): one gray channel
        return {"size": upright, "channels": channels, "alpha": alpha, "bit_depth": depth}

    def palette(transparent: bool) -> bytes:
        image = Image.fromarray(rgb8).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        buffer = io.BytesIO()
        image.save(buffer, "PNG", **({"transparency": 0} if transparent else {}))
        return buffer.getvalue()

    def tiff_exif(orientation: int) -> bytes:
        return tiff_bytes(rgb8, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])

    def cmyk_tiff() -> bytes:
        return pil_bytes(noise(h, w, 4, "o-cmyk"), "TIFF", mode="CMYK")

    def with_icc(fmt: str) -> bytes:
        from PIL import ImageCms

        profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        profile[24:36] = bytes(12)  # the creation date: fixed, so the file is the same on every run
        profile[84:100] = bytes(16)  # the profile ID (an MD5 that covers the date): "not computed"
        profile = bytes(profile)
        return pil_bytes(rgb8, fmt, icc_profile=profile)

    files: dict[str, tuple[Callable[[], bytes], dict]] = {
        # PNG
        "png-rgb8.png": (lambda: raw_png(rgb8, 2), props()),
        "png-rgba8.png": (lambda: raw_png(rgba8, 6), props(alpha=True)),
        "png-gray8.png": (lambda: raw_png(gray8, 0), props(1)),
        "png-gray-alpha8.png": (lambda: raw_png(ga8, 4), props(1, True)),
        "png-rgb16.png": (lambda: raw_png(rgb16, 2), props(depth=16)),
        "png-rgba16.png": (lambda: raw_png(rgba16, 6), props(alpha=True, depth=16)),
        "png-gray16.png": (lambda: raw_png(gray16, 0), props(1, depth=16)),
        "png-gray-alpha16.png": (lambda: raw_png(ga16, 4), props(1, True, 16)),
        "png-interlaced-rgb8.png": (lambda: raw_png(rgb8, 2, interlace=True), props()),
        "png-interlaced-rgb16.png": (lambda: raw_png(rgb16, 2, interlace=True), props(depth=16)),
        "png-palette.png": (lambda: palette(False), props()),
        "png-palette-transparent.png": (lambda: palette(True), props(alpha=True)),
        "png-gray-trns.png": (lambda: raw_png(gray8, 0, extra=_chunk(b"tRNS", b"\x00\x10")), props(1, True)),
        "png-rgb-trns.png": (lambda: raw_png(rgb8, 2, extra=_chunk(b"tRNS", bytes(6))), props(alpha=True)),
        "png-1bit.png": (lambda: pil_bytes(gray8[:, :, 0] > 127, "PNG"), props(1)),
        "png-gray4.png": (lambda: png_gray4(h, w, "o-g4"), props(1)),
        "png-icc.png": (lambda: with_icc("PNG"), props()),
        "png-1x1.png": (lambda: raw_png(rgb8[:1, :1], 2), props(upright=[2, 2])),
        "png-1x64-row.png": (lambda: raw_png(noise(1, 64, 3, "o-row"), 2), props(upright=[2, 128])),
        "png-64x1-column.png": (lambda: raw_png(noise(64, 1, 3, "o-col"), 2), props(upright=[128, 2])),
        # JPEG
        "jpg-rgb.jpg": (lambda: pil_bytes(rgb8, "JPEG", quality=90), props()),
        "jpg-gray.jpg": (lambda: pil_bytes(gray8, "JPEG", quality=90), props(1)),
        "jpg-cmyk.jpg": (
            lambda: pil_bytes(noise(h, w, 4, "o-cmykj"), "JPEG", mode="CMYK", quality=90),
            props(),
        ),
        "jpg-progressive.jpg": (lambda: pil_bytes(rgb8, "JPEG", quality=90, progressive=True), props()),
        "jpg-444.jpg": (lambda: pil_bytes(rgb8, "JPEG", quality=90, subsampling=0), props()),
        "jpg-restart-markers.jpg": (lambda: cv2_restart_jpeg(rgb8), props()),
        "jpg-icc.jpg": (lambda: with_icc("JPEG"), props()),
        "jpeg-suffix.jpeg": (lambda: pil_bytes(rgb8, "JPEG", quality=90), props()),
        # WebP
        "webp-lossy.webp": (lambda: pil_bytes(rgb8, "WEBP", quality=80), props()),
        "webp-lossless.webp": (lambda: pil_bytes(rgb8, "WEBP", lossless=True), props()),
        "webp-lossless-alpha.webp": (lambda: pil_bytes(rgba8, "WEBP", lossless=True), props(alpha=True)),
        "webp-lossy-alpha.webp": (lambda: pil_bytes(rgba8, "WEBP", quality=80), props(alpha=True)),
        # TIFF
        "tif-rgb8.tif": (lambda: pil_bytes(rgb8, "TIFF"), props()),
        "tif-gray8.tif": (lambda: pil_bytes(gray8, "TIFF"), props(1)),
        "tif-rgba8.tif": (lambda: pil_bytes(rgba8, "TIFF"), props(alpha=True)),
        "tif-palette.tif": (lambda: pil_bytes(rgb8, "TIFF", convert="P"), props()),
        "tif-cmyk.tif": (cmyk_tiff, props()),
        "tif-lzw.tif": (lambda: pil_bytes(rgb8, "TIFF", compression="tiff_lzw"), props()),
        "tif-deflate.tif": (lambda: pil_bytes(rgb8, "TIFF", compression="tiff_adobe_deflate"), props()),
        "tif-packbits.tif": (lambda: pil_bytes(rgb8, "TIFF", compression="packbits"), props()),
        "tif-rgb16.tif": (lambda: tiff_bytes(rgb16, photometric="rgb"), props(depth=16)),
        "tif-gray16.tif": (lambda: tiff_bytes(gray16[:, :, 0], photometric="minisblack"), props(1, depth=16)),
        "tif-gray-alpha16.tif": (
            lambda: tiff_bytes(ga16, photometric="minisblack", extrasamples=["unassalpha"]),
            props(1, True, 16),
        ),
        "tif-rgb16-bigendian.tif": (
            lambda: tiff_bytes(rgb16, photometric="rgb", byteorder=">"),
            props(depth=16),
        ),
        "tif-rgb8-planar.tif": (
            lambda: tiff_bytes(np.moveaxis(rgb8, -1, 0), photometric="rgb", planarconfig="separate"),
            props(),
        ),
        "tif-float32-gray.tif": (
            lambda: tiff_bytes(
                noise(h, w, 1, "o-f32g")[:, :, 0].astype(np.float32) / 255, photometric="minisblack"
            ),
            props(1, depth=32),
        ),
        "tif-float32-rgb.tif": (
            lambda: tiff_bytes(noise(h, w, 3, "o-f32").astype(np.float32) / 255, photometric="rgb"),
            props(depth=32),
        ),
        "tif-1bit.tif": (lambda: pil_bytes(gray8[:, :, 0] > 127, "TIFF"), props(1)),
        "tif-next-ifd-is-itself.tif": (_tiff_ifd_loop, props(1, upright=[8, 8])),
        "tif-orientation-6.tif": (lambda: tiff_exif(6), props(upright=turned)),
        "tif-orientation-3.tif": (lambda: tiff_exif(3), props()),
        # BMP
        "bmp-rgb24.bmp": (lambda: pil_bytes(rgb8, "BMP"), props()),
        "bmp-palette8.bmp": (lambda: pil_bytes(rgb8, "BMP", convert="P"), props()),
        "bmp-gray8.bmp": (lambda: pil_bytes(gray8, "BMP"), props(1)),
        "bmp-1bit.bmp": (lambda: pil_bytes(gray8[:, :, 0] > 127, "BMP"), props(1)),
        # content and suffix disagree: the content decides
        "png-content-named.jpg": (lambda: raw_png(rgb8, 2), props()),
        "jpg-content-named.png": (lambda: pil_bytes(rgb8, "JPEG", quality=90), props()),
        "webp-content-named.tif": (lambda: pil_bytes(rgb8, "WEBP", lossless=True), props()),
        # names
        "name with spaces.png": (lambda: raw_png(rgb8, 2), props()),
        "ünïcödé-名前.png": (lambda: raw_png(rgb8, 2), props()),
        "-starts-with-dash.png": (lambda: raw_png(rgb8, 2), props()),
        "UPPER.JPG": (lambda: pil_bytes(rgb8, "JPEG", quality=90), props()),
    }
    for orientation in range(1, 9):  # EXIF orientation: applied on read, so 5..8 come out turned
        files[f"jpg-exif-orientation-{orientation}.jpg"] = (
            functools.partial(exif_jpeg, orientation, f"o-exif{orientation}"),
            props(upright=turned if orientation >= 5 else size),
        )
    return files


def cv2_restart_jpeg(array: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(
        ".jpg", np.ascontiguousarray(array[:, :, ::-1]), [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]
    )
    assert ok
    return data.tobytes()


def odd_valid() -> list[Invocation]:
    cases = [_written("odd_valid", name, _write(f), props) for name, (f, props) in _odd_valid().items()]
    return [_infer(cases, "odd_valid", timeout=120)]


def garbage_with_suffixes() -> list[Invocation]:
    files: dict[str, Callable[[], bytes]] = {}
    for suffix in _SUFFIXES:
        files[f"random-{suffix.lower()}.{suffix}"] = functools.partial(garbage, 4096, f"g-{suffix}")
        files[f"one-byte-{suffix.lower()}.{suffix}"] = functools.partial(garbage, 1, f"g1-{suffix}")
    text = b"Hello, this is not an image.\n" * 40
    files.update(
        {
            "text.png": lambda: text,
            "html.jpg": lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
            "json.webp": lambda: b'{"not": "an image"}\n',
            "utf16.tif": lambda: "not an image".encode("utf-16"),
            "zeros-1k.png": lambda: bytes(1024),
            "ff-1k.jpg": lambda: b"\xff" * 1024,
            "zip.png": lambda: _zip_bytes(),
            "gzip.tif": lambda: gzip.compress(b"not an image" * 100, mtime=0),
            "pdf.jpg": lambda: b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n",
            "png-signature-then-garbage.png": functools.partial(
                garbage, 2048, "g-pngsig", b"\x89PNG\r\n\x1a\n"
            ),
            "png-bad-ihdr-crc.png": lambda: _bad_crc_png(),
            "png-no-idat.png": lambda: (
                b"\x89PNG\r\n\x1a\n"
                + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
                + _chunk(b"IEND", b"")
            ),
            "png-idat-not-zlib.png": lambda: raw_png(noise(8, 8, 3, "g-z"), 2, idat=garbage(300, "g-idat")),
            "png-bad-color-type.png": lambda: raw_png(noise(8, 8, 3, "g-ct"), 5),
            "jpg-soi-then-garbage.jpg": functools.partial(garbage, 2048, "g-soi", b"\xff\xd8\xff\xe0"),
            "jpg-soi-eoi.jpg": lambda: b"\xff\xd8\xff\xd9",
            "webp-riff-then-garbage.webp": lambda: (
                b"RIFF" + struct.pack("<I", 2052) + b"WEBP" + garbage(2048, "g-riff")
            ),
            "webp-riff-avi.webp": lambda: b"RIFF" + struct.pack("<I", 12) + b"AVI LIST" + bytes(4),
            "tif-ii-then-garbage.tif": functools.partial(garbage, 2048, "g-ii", b"II*\x00\x08\x00\x00\x00"),
            "tif-mm-then-garbage.tiff": functools.partial(garbage, 2048, "g-mm", b"MM\x00*\x00\x00\x00\x08"),
            "bmp-bm-then-garbage.bmp": functools.partial(garbage, 2048, "g-bm", b"BM"),
        }
    )
    cases = [_failed("garbage", name, _write(f)) for name, f in files.items()]
    return [_infer(cases + _goods("garbage"), "garbage")]


def _zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("a.txt", (2020, 1, 1, 0, 0, 0)), "not an image")
    return buffer.getvalue()


def _bad_crc_png() -> bytes:
    data = bytearray(raw_png(noise(8, 8, 3, "g-crc"), 2))
    data[29] ^= 0xFF  # the last byte of IHDR's CRC
    return bytes(data)


def _tiff_ifd_loop() -> bytes:
    """A TIFF whose first IFD says the next IFD is itself."""
    entries = [
        (256, 3, 1, 4),
        (257, 3, 1, 4),
        (258, 3, 1, 8),
        (262, 3, 1, 1),
        (273, 4, 1, 200),
        (279, 4, 1, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 8)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd
    return data + bytes(200 - len(data)) + bytes(16)


# ---------------------------------------------------------------------------------------------------
# Symbolic links, FIFOs, devices
# ---------------------------------------------------------------------------------------------------


_HANG_TIMEOUT = 12.0
"""Seconds before a call over one special file counts as hung (it needs about one when it does not)."""


def symlinks() -> list[Invocation]:
    cls = "symlink"
    target_make, target_props = _good("symlink-target.png")
    chain_make, chain_props = _good("symlink-chain.jpg")
    sub_make, sub_props = _good("symlink-subfolder.png")
    cases = [
        Case("symlink/target-outside-folder", cls, "elsewhere/target.png", WRITTEN, target_make, None),
        Case(
            f"{cls}/link-to-file.png",
            cls,
            "in/link-to-file.png",
            WRITTEN,
            _symlink("../elsewhere/target.png"),
            "out/link-to-file_out",
            props=target_props,
        ),
        Case("symlink/chain-target", cls, "elsewhere/chain-end.jpg", WRITTEN, chain_make, None),
        Case(
            f"{cls}/chain-1.jpg",
            cls,
            "in/chain-1.jpg",
            WRITTEN,
            _symlink("../elsewhere/chain-2.jpg"),
            "out/chain-1_out",
            props=chain_props,
        ),
        Case(f"{cls}/chain-2.jpg", cls, "elsewhere/chain-2.jpg", WRITTEN, _symlink("chain-end.jpg"), None),
        Case(
            f"{cls}/subfolder-file.png",
            cls,
            "elsewhere/sub/inner.png",
            WRITTEN,
            sub_make,
            "out/linked-folder/inner_out",
            props=sub_props,
        ),
        Case(f"{cls}/link-to-folder", cls, "in/linked-folder", WRITTEN, _symlink("../elsewhere/sub"), None),
        Case(f"{cls}/link-to-folder-loop", cls, "in/loop-folder", WRITTEN, _symlink("."), None),
        Case(
            f"{cls}/link-to-zero-byte.png",
            cls,
            "in/link-to-zero-byte.png",
            FAILED,
            _symlink("../elsewhere/empty.png"),
            "out/link-to-zero-byte_out",
            message="empty",
        ),
        Case(f"{cls}/zero-byte-target", cls, "elsewhere/empty.png", WRITTEN, _write(b""), None),
        *_goods(cls),
    ]
    invocations = [_infer(cases, "symlink_good", "-r", timeout=90)]
    # entries a folder listing cannot read as a file: each must be reported, not dropped in silence
    special = {
        "dangling.png": _symlink("does-not-exist.png"),
        "self-loop.png": _symlink("self-loop.png"),
        "loop-a.jpg": _symlink("loop-b.jpg"),
        "loop-b.jpg": _symlink("loop-a.jpg"),
        "to-dev-zero.png": _symlink("/dev/zero"),
        "to-dev-null.jpg": _symlink("/dev/null"),
        "to-dev-urandom.webp": _symlink("/dev/urandom"),
        "fifo.png": _fifo,
        "link-to-fifo.tif": _symlink("fifo.png"),
    }
    cases = [_failed("special_in_folder", name, make) for name, make in special.items()]
    invocations.append(_infer(cases + _goods("special_in_folder"), "special_in_folder", timeout=30))
    cases = [
        Case(
            f"compress_folder/{name}",
            "special_in_folder",
            f"in/{name}",
            FAILED,
            make,
            f"out/{Path(name).stem}.s2l",
            True,
        )
        for name, make in (
            ("dangling.png", _symlink("nowhere.png")),
            ("to-dev-zero.jpg", _symlink("/dev/zero")),
            ("fifo.png", _fifo),
        )
    ]
    good = Case(
        "compress_folder/good.png",
        "special_in_folder",
        "in/good.png",
        WRITTEN,
        _lazy(raw_png, noise(20, 24, 3, "cf-good"), 2),
        "out/good.s2l",
        True,
        props={"s2l": True},
    )
    invocations.append(
        Invocation(
            "special_in_folder_compress",
            [*_COMPRESS, "in", "-o", "out"],
            [*cases, good],
            1,
            timeout=60,
        )
    )
    # the same named on the command line, one call each (one that hangs must not hide the others)
    for name, make in (
        ("to-dev-zero.png", _symlink("/dev/zero")),
        ("to-dev-urandom.jpg", _symlink("/dev/urandom")),
        ("to-dev-null.png", _symlink("/dev/null")),
    ):
        cases = [_failed("special_named", name, make)]
        invocations.append(
            _infer(cases, f"named_{Path(name).stem}", inputs=(f"in/{name}",), timeout=_NORMAL_TIMEOUT)
        )
    cases = [
        _failed("special_named", "fifo.png", _fifo),
        _failed("special_named", "link-to-fifo.jpg", _symlink("fifo-target")),
        Case("special_named/fifo-target", "special_named", "in/fifo-target", WRITTEN, _fifo),
    ]
    invocations.append(
        _infer(
            cases,
            "named_fifo",
            inputs=("in/fifo.png", "in/link-to-fifo.jpg"),
            timeout=_NORMAL_TIMEOUT,
        )
    )
    # a path on the command line that leads nowhere is a usage error (exit status 2), like a missing one
    for name, make in (
        ("self-loop.png", _symlink("self-loop.png")),
        ("dangling.png", _symlink("nowhere.png")),
    ):
        case = Case(
            f"special_named/{name}", "special_named", f"in/{name}", ERROR, make, f"out/{Path(name).stem}_out"
        )
        invocations.append(
            Invocation(
                f"named_{Path(name).stem}", ["infer", *HAT, f"in/{name}", "-o", "out"], [case], 2, timeout=30
            )
        )
    return invocations


def collisions() -> list[Invocation]:
    """Inputs sharing an output name: every one written under its own name (each a distinct size, so
    each output can be traced to its input)."""
    cls = "collision"
    names = [
        ("in", "x.png"),
        ("in", "x.PNG"),
        ("in", "y.jpg"),
        ("in", "y.jpeg"),
        ("in", "w.png"),
        ("in", "w.webp"),
        ("in", "w_png.jpg"),
        ("in", "a.tif"),
        ("in", "a.tiff"),
        ("in", "a.TIF"),
        ("in", "Ä.png"),
        ("in", "ä.png"),
        ("in", "straße.png"),
        ("in", "STRASSE.png"),
        ("d1", "z.png"),
        ("d2", "z.png"),
        ("d3", "z.jpg"),
        ("in", "k_out.png"),
        ("in", "k.png"),
    ]
    cases = []
    for index, (folder, name) in enumerate(names):
        h, w = 10 + index, 12 + 2 * index
        fmt = {
            ".png": "PNG",
            ".jpg": "JPEG",
            ".jpeg": "JPEG",
            ".webp": "WEBP",
            ".tif": "TIFF",
            ".tiff": "TIFF",
        }[Path(name).suffix.lower()]
        save = {"quality": 90} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
        make = _lazy(pil_bytes, noise(h, w, 3, f"c-{folder}-{name}"), fmt, **save)
        cases.append(
            Case(
                f"{cls}/{folder}/{name}",
                cls,
                f"{folder}/{name}",
                WRITTEN,
                make,
                "out/*",
                props={"size": [2 * h, 2 * w], "channels": 3, "alpha": False},
            )
        )
    return [_infer(cases, "collision", inputs=("in", "d1", "d2/z.png", "d3"), timeout=90)]


# ---------------------------------------------------------------------------------------------------
# restorer compress
# ---------------------------------------------------------------------------------------------------

_COMPRESS = ["compress", "-m", "tiny-s2lic", "--quality", "1", "-q"]


def compress() -> list[Invocation]:
    cls = "compress"
    cases = [
        Case(
            f"{cls}/zero.png", cls, "in/zero.png", FAILED, _write(b""), "out/zero.s2l", True, message="empty"
        ),
        Case(
            f"{cls}/garbage.jpg",
            cls,
            "in/garbage.jpg",
            FAILED,
            _lazy(garbage, 999, "cg"),
            "out/garbage.s2l",
            True,
        ),
        Case(
            f"{cls}/truncated.png",
            cls,
            "in/truncated.png",
            FAILED,
            _truncated(lambda: pil_bytes(noise(30, 40, 3, "ct"), "PNG"), 0.5),
            "out/truncated.s2l",
            True,
        ),
        Case(
            f"{cls}/header-jpeg.jpg",
            cls,
            "in/header-jpeg.jpg",
            FAILED,
            _write(lambda: patch_jpeg_frame(jpeg_bytes(24, 32, "chj"), 48)),
            "out/header-jpeg.s2l",
            True,
        ),
        Case(
            f"{cls}/bomb-100000.png",
            cls,
            "in/bomb-100000.png",
            FAILED,
            _lazy(_giant_png, 100_000, 100_000),
            "out/bomb-100000.s2l",
            True,
            message=BOMB_MESSAGE,
        ),
    ]
    for name in ("good.png", "gray.png", "odd-16bit.png"):
        array = noise(
            30, 40, 1 if "gray" in name else 3, f"c-{name}", np.uint16 if "16" in name else np.uint8
        )
        make = _write(functools.partial(raw_png, array, 0 if array.shape[2] == 1 else 2))
        cases.append(
            Case(
                f"{cls}/{name}",
                cls,
                f"in/{name}",
                WRITTEN,
                make,
                f"out/{Path(name).stem}.s2l",
                True,
                props={"s2l": True},
            )
        )
    invocations = [Invocation("compress_mixed", [*_COMPRESS, "in", "-o", "out"], cases, 1, timeout=90)]
    # the memory budget, as for infer (bomb_budget): a 128 x 128 PNG, and 256 kB "available"
    bomb = Case(
        f"{cls}/png-zeros-128-budget.png",
        cls,
        "in/png-zeros-128-budget.png",
        FAILED,
        _lazy(_zeros_png, 128),
        "out/png-zeros-128-budget.s2l",
        True,
        message=BOMB_MESSAGE,
    )
    invocations.append(
        Invocation(
            "compress_budget",
            [*_COMPRESS, "in", "-o", "out"],
            [bomb],
            1,
            timeout=60,
            limits={"available_memory": 256 << 10},
        )
    )
    for name, make in (("to-dev-zero.png", _symlink("/dev/zero")), ("fifo.png", _fifo)):
        case = Case(
            f"{cls}/named-{name}", cls, f"in/{name}", FAILED, make, f"out/{Path(name).stem}.s2l", True
        )
        invocations.append(
            Invocation(
                f"compress_{Path(name).stem}", [*_COMPRESS, f"in/{name}", "-o", "out"], [case], 1, timeout=40
            )
        )
    return invocations


# ---------------------------------------------------------------------------------------------------
# restorer decompress: corrupt .s2l files
# ---------------------------------------------------------------------------------------------------


def s2l_base(ctx: Context) -> bytes:
    """A valid ``.s2l`` file of a 40 x 56 image, coded with the fuzz weights (made once per context)."""
    if "s2l" not in ctx.cache:
        from restorer.codec.api import compress_image, load_codec

        with tiny_zoo(ctx.root / "weights"):
            codec = load_codec("tiny-s2lic-q1")
            ctx.cache["s2l"] = compress_image(codec, noise(40, 56, 3, "s2l-base"))
    return ctx.cache["s2l"]


def _s2l(transform: Callable[[bytes], bytes]) -> Callable[[Path, Context], None]:
    def make(path: Path, ctx: Context) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(transform(s2l_base(ctx)))

    return make


def _flip(position: int, mask: int = 0xFF) -> Callable[[bytes], bytes]:
    def transform(data: bytes) -> bytes:
        out = bytearray(data)
        index = position if position >= 0 else len(out) + position
        out[index] ^= mask
        return bytes(out)

    return transform


def _recrc(data: bytearray) -> bytes:
    body = bytes(data[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def _header_field(name: str, value) -> Callable[[bytes], bytes]:
    """Rewrite one header field and the CRC (a well-formed file that lies), via the container itself."""

    def transform(data: bytes) -> bytes:
        from restorer.codec import container

        header, streams = container.unpack(data)
        return container.pack(dataclasses.replace(header, **{name: value}), streams)

    return transform


def _raw_field(offset_from_variant_end: int, fmt: str, value) -> Callable[[bytes], bytes]:
    """Write ``value`` at a header offset (counted from the end of the variant name) and fix the CRC:
    for values the container's pack() refuses to write."""

    def transform(data: bytes) -> bytes:
        out = bytearray(data)
        start = 13 + out[12] + offset_from_variant_end
        out[start : start + struct.calcsize(fmt)] = struct.pack(fmt, value)
        return _recrc(out)

    return transform


def corrupt_s2l() -> list[Invocation]:
    cls = "s2l"
    cases: list[Case] = []

    def bad(name: str, make, message: str | None = None, xfail: str | None = None) -> None:
        cases.append(
            Case(
                f"{cls}/{name}",
                cls,
                f"in/{name}",
                FAILED,
                make,
                f"out/{Path(name).stem}.png",
                True,
                message=message,
                xfail=xfail,
            )
        )

    # flipped bytes: magic, version, flags, name length, name, fingerprints, size, shapes, digest, lengths,
    # streams, CRC (offsets past the name are counted from the end of a 13-character name)
    for position in (
        0,
        3,
        7,
        8,
        10,
        12,
        14,
        20,
        26,
        30,
        34,
        38,
        40,
        45,
        48,
        50,
        55,
        60,
        66,
        70,
        75,
        80,
        90,
        100,
        120,
        -40,
        -20,
        -9,
        -5,
        -4,
        -2,
        -1,
    ):
        bad(f"flip-byte-{position}.s2l", _s2l(_flip(position)))
    for position in (24, 60, 95, -10):
        bad(f"flip-bit-{position}.s2l", _s2l(_flip(position, 0x01)))
    for cut in (1, 7, 8, 11, 13, 20, 30, 40, 50, 60, 70, 80, 0.5, 0.75, 0.9):
        label = f"{int(cut * 100)}pct" if isinstance(cut, float) else f"{cut}b"

        def truncate(data: bytes, cut=cut) -> bytes:
            return data[: cut if isinstance(cut, int) else int(len(data) * cut)]

        bad(f"truncated-{label}.s2l", _s2l(truncate))
    for count in (1, 4):
        bad(f"truncated-last-{count}.s2l", _s2l(lambda data, count=count: data[:-count]))
    bad("appended-bytes.s2l", _s2l(lambda data: data + b"\x00" * 16))
    bad("doubled.s2l", _s2l(lambda data: data + data))
    bad("wrong-magic-png.s2l", _s2l(lambda data: b"\x89PNG\r\n\x1a\n" + data[8:]))
    bad("wrong-magic-zeros.s2l", _s2l(lambda data: bytes(8) + data[8:]))
    bad("wrong-magic-lowercase.s2l", _s2l(lambda data: b"\x89s2l\r\n\x1a\n" + data[8:]))
    bad("magic-only.s2l", _write(b"\x89S2L\r\n\x1a\n"))
    bad("zero-byte.s2l", _write(b""))
    bad("garbage.s2l", _lazy(garbage, 3000, "s2l-garbage"))
    bad("png-named-s2l.s2l", _lazy(raw_png, noise(8, 8, 3, "s2l-png"), 2))
    bad("version-3.s2l", _s2l(lambda data: _recrc(bytearray(data[:8] + struct.pack("<H", 3) + data[10:]))))
    bad("version-0.s2l", _s2l(lambda data: _recrc(bytearray(data[:8] + struct.pack("<H", 0) + data[10:]))))
    bad("flags-set.s2l", _s2l(lambda data: _recrc(bytearray(data[:10] + struct.pack("<H", 1) + data[12:]))))
    bad("unknown-model.s2l", _s2l(_header_field("variant", "no-such-model-q1")))
    bad("other-real-model.s2l", _s2l(_header_field("variant", "s2lic-small-q2")))
    bad("other-weights.s2l", _s2l(_header_field("weights_fingerprint", bytes(8))))
    bad("other-tables.s2l", _s2l(_header_field("table_fingerprint", bytes(4))))
    bad("cuda-encoded.s2l", _s2l(_header_field("device_kind", "cuda")))
    bad("wrong-digest.s2l", _s2l(_header_field("digest", bytes(8))))
    bad("height-plus-64.s2l", _s2l(_header_field("height", 104)))
    bad("width-zero.s2l", _s2l(_header_field("width", 0)))
    bad("channels-2.s2l", _s2l(_raw_field(12 + 8, "<B", 2)))
    bad("threads-0.s2l", _s2l(_raw_field(12 + 9, "<B", 0)))
    bad("device-code-7.s2l", _s2l(_raw_field(12 + 10, "<B", 7)))
    bad("scale-levels-1.s2l", _s2l(_raw_field(12 + 11, "<H", 1)))
    bad("scale-levels-65535.s2l", _s2l(_raw_field(12 + 11, "<H", 65535)))
    bad("scale-levels-64.s2l", _s2l(_header_field("scale_levels", 64)))
    bad("y-shape-wrong.s2l", _s2l(lambda data: _header_field("y_shape", (40, 3, 5))(data)))
    bad("z-shape-zero.s2l", _s2l(lambda data: _header_field("z_shape", (0, 0, 0))(data)))
    bad("streams-swapped.s2l", _s2l(lambda data: _swap_streams(data)))
    bad("streams-emptied.s2l", _s2l(lambda data: _empty_streams(data)))
    bad("bomb-65535x65535.s2l", _s2l(_bomb_s2l(65535, 65535)), message=BOMB_MESSAGE)
    bad("bomb-4294967295x1.s2l", _s2l(_bomb_s2l(1, 2**32 - 1)), message=BOMB_MESSAGE)
    bad("non-utf8-model-name.s2l", _s2l(lambda data: _recrc(bytearray(data[:13] + b"\xff\xfe" + data[15:]))))
    good = {"size": [40, 56], "channels": 3, "alpha": False}
    for index in range(2):
        cases.append(
            Case(
                f"{cls}/good-{index}.s2l",
                cls,
                f"in/good-{index}.s2l",
                WRITTEN,
                _s2l(lambda d: d),
                f"out/good-{index}.png",
                True,
                props=good,
            )
        )
    invocations = [Invocation("s2l_corrupt", ["decompress", "in", "-o", "out", "-q"], cases, 1, timeout=120)]
    # a well-formed file declaring 256 x 256 (latent shapes to match), 256 kB "available" (as bomb_budget)
    bomb = Case(
        f"{cls}/bomb-256x256-budget.s2l",
        cls,
        "in/bomb-256x256-budget.s2l",
        FAILED,
        _s2l(_bomb_s2l(256, 256)),
        "out/bomb-256x256-budget.png",
        True,
        message=BOMB_MESSAGE,
    )
    invocations.append(
        Invocation(
            "decompress_budget",
            ["decompress", "in", "-o", "out", "-q"],
            [bomb],
            1,
            timeout=60,
            limits={"available_memory": 256 << 10},
        )
    )
    cases = [
        Case(
            f"{cls}/named-{name}",
            cls,
            f"in/{name}",
            FAILED,
            make,
            f"out/{Path(name).stem}.png",
            True,
        )
        for name, make in (
            ("fifo.s2l", _fifo),
            ("to-dev-zero.s2l", _symlink("/dev/zero")),
            ("to-dev-urandom.s2l", _symlink("/dev/urandom")),
        )
    ]
    argv = ["decompress", *(case.path for case in cases), "-o", "out", "-q"]
    invocations.append(Invocation("decompress_special", argv, cases, 1, timeout=_HANG_TIMEOUT))
    return invocations


def _streams(data: bytes) -> tuple[object, list[bytes]]:
    from restorer.codec import container

    return container.unpack(data)


def _swap_streams(data: bytes) -> bytes:
    from restorer.codec import container

    header, streams = _streams(data)
    return container.pack(header, streams[::-1])


def _empty_streams(data: bytes) -> bytes:
    from restorer.codec import container

    header, streams = _streams(data)
    return container.pack(header, [b"", b""])


def _bomb_s2l(height: int, width: int) -> Callable[[bytes], bytes]:
    """A well-formed file declaring a huge image, with latent shapes that agree with it (CRC fixed)."""

    def transform(data: bytes) -> bytes:
        from restorer.codec import container

        header, streams = container.unpack(data)
        pad_h, pad_w = -(-height // 64) * 64, -(-width // 64) * 64
        y = (header.y_shape[0], min(pad_h // 16, 65535), min(pad_w // 16, 65535))
        z = (header.z_shape[0], min(pad_h // 64, 65535), min(pad_w // 64, 65535))
        return container.pack(
            dataclasses.replace(header, height=height, width=width, y_shape=y, z_shape=z), streams
        )

    return transform


# ---------------------------------------------------------------------------------------------------
# Medical: damaged DICOM and NIfTI for ct_denoise (tiny Restore-RWKV)
# ---------------------------------------------------------------------------------------------------

_MEDICAL = [
    "infer",
    "--task",
    "ct_denoise",
    "-m",
    "tiny-rwkv-ct-denoise",
    "-q",
    "--previews",
    "none",
    "-t",
    "0",
]


def _uid(text: str) -> str:
    return f"1.2.826.0.1.3680043.10.1001.{_seed(text)}"


def dicom_bytes(
    label: str, rows: int = 24, cols: int = 32, index: int = 0, series: str | None = None, **attributes
) -> bytes:
    """One CT slice (12-bit, HU = raw - 1024) with deterministic UIDs; ``series`` groups slices."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    raw = noise(rows, cols, 1, f"dcm-{label}-{index}", np.uint16)[:, :, 0] >> 4
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = _uid(f"{label}-{index}")
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "Fuzz^Phantom", "0001"
    ds.StudyInstanceUID = _uid("study")
    ds.SeriesInstanceUID = _uid(f"series-{series or label}")
    ds.FrameOfReferenceUID = _uid("frame")
    ds.SeriesNumber, ds.InstanceNumber = 2, index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -120.0, 5.0 * index]
    ds.PixelSpacing = [0.7, 0.8]
    ds.SliceThickness = 2.5
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = 40, 400
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.set_pixel_data(raw.astype(np.uint16), "MONOCHROME2", 12, generate_instance_uid=False)
    for key, value in attributes.items():  # after set_pixel_data, which sets Rows / Columns itself
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def nifti_bytes(label: str, shape=(24, 20, 3), gz: bool = False, dtype=np.float32) -> bytes:
    import nibabel as nib

    data = (noise(shape[0], shape[1] * shape[2], 1, f"nii-{label}")[:, :, 0].reshape(shape) * 16.0).astype(
        dtype
    )
    image = nib.Nifti1Image(data, np.diag([2.0, 1.5, 3.0, 1.0]))
    raw = image.to_bytes()
    return gzip.compress(raw, mtime=0) if gz else raw


def nifti_giant(gz: bool = False) -> bytes:
    """A NIfTI-1 header declaring 4096 x 4096 x 4096 float32 voxels, followed by a few bytes."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_dtype(np.float32)
    header.set_data_shape((4096, 4096, 4096))
    raw = header.binaryblock + bytes(4) + bytes(256)
    return gzip.compress(raw, mtime=0) if gz else raw


def medical() -> list[Invocation]:
    cls = "medical"
    cases: list[Case] = []

    def bad(name: str, make, reported: str | None = None, message: str | None = None, xfail=None) -> None:
        stem = name.split("/")[-1].split(".")[0]
        cases.append(
            Case(
                f"{cls}/{name}",
                cls,
                f"in/{name}",
                FAILED,
                make,
                f"out/{stem}_out",
                reported=reported,
                message=message,
                xfail=xfail,
            )
        )

    dicom = functools.partial(dicom_bytes, "good-series")
    nii = functools.partial(nifti_bytes, "nii")
    for cut in (64, 0.5, 0.8, 0.99):
        label = f"{int(cut * 100)}pct" if isinstance(cut, float) else f"{cut}b"
        source = functools.partial(dicom_bytes, f"trunc-{label}")  # its own series: it fails alone
        bad(f"dicom-trunc-{label}/slice.dcm", _truncated(source, cut), reported=f"in/dicom-trunc-{label}")
    bad("zero.dcm", _write(b""))
    bad("garbage.dcm", _lazy(garbage, 2000, "dcm-garbage"))
    bad("nifti-trunc-header.nii", _truncated(nii, 200))
    bad("nifti-trunc-data.nii", _truncated(nii, 0.6))
    bad("nifti-trunc-last-byte.nii", _truncated(nii, -1))
    bad("nifti-gz-trunc.nii.gz", _truncated(functools.partial(nifti_bytes, "gz", gz=True), 0.5))
    bad("nifti-gz-crc.nii.gz", _write(lambda: _flip(-6)(nifti_bytes("gzcrc", gz=True))))
    bad("zero.nii", _write(b""))
    bad("zero.nii.gz", _write(b""))
    bad("garbage.nii", _lazy(garbage, 2000, "nii-garbage"))
    bad("garbage.nii.gz", _lazy(garbage, 2000, "niigz-garbage"))
    bad("gzip-of-garbage.nii.gz", _write(lambda: gzip.compress(garbage(2000, "nii-gzg"), mtime=0)))
    bad("nifti-bomb-4096cubed.nii", _lazy(nifti_giant), message=BOMB_MESSAGE)
    bad("nifti-bomb-4096cubed.nii.gz", _lazy(nifti_giant, gz=True), message=BOMB_MESSAGE)
    bad("dicom-bomb/slice.dcm", _lazy(_dicom_giant), reported="in/dicom-bomb", message=BOMB_MESSAGE)
    for index in range(2):
        cases.append(
            Case(
                f"{cls}/good-series/slice{index}.dcm",
                cls,
                f"in/good-series/slice{index}.dcm",
                WRITTEN,
                _lazy(dicom, index=index),
                "out/good-series_out",
                True,
                props={"dicom_series": 2},
            )
        )
    cases.append(
        Case(
            f"{cls}/good.nii",
            cls,
            "in/good.nii",
            WRITTEN,
            _write(nii),
            "out/good_out.nii",
            True,
            props={"nifti": [24, 20, 3]},
        )
    )
    cases.append(
        Case(
            f"{cls}/good.nii.gz",
            cls,
            "in/good.nii.gz",
            WRITTEN,
            _lazy(nifti_bytes, "gzgood", gz=True),
            "out/good_out.nii.gz",
            True,
            props={"nifti": [24, 20, 3]},
        )
    )
    invocations = [Invocation("medical", [*_MEDICAL, "in", "-o", "out"], cases, 1, timeout=120)]
    # each with a good volume beside it, one call each (a hang must not hide the others)
    cut_header = []
    for cut in (132, 200, 300):  # right after the 'DICM' prefix, inside the file meta, inside the dataset
        source = functools.partial(dicom_bytes, f"trunc-{cut}b")
        cut_header.append(
            Case(
                f"{cls}/dicom-trunc-{cut}b/slice.dcm",
                cls,
                f"in/dicom-trunc-{cut}b/slice.dcm",
                FAILED,
                _truncated(source, cut),
                f"out/dicom-trunc-{cut}b_out",
                reported=f"in/dicom-trunc-{cut}b",
            )
        )
    good = Case(
        f"{cls}/with-cut-header/good.nii",
        cls,
        "in/good.nii",
        WRITTEN,
        _write(nii),
        "out/good_out.nii",
        True,
        props={"nifti": [24, 20, 3]},
    )
    invocations.append(
        Invocation(
            "medical_dicom_cut_header",
            [*_MEDICAL, "in", "-o", "out"],
            [*cut_header, good],
            1,
            timeout=_NORMAL_TIMEOUT,
        )
    )
    # each with a good volume beside it, one call each: a file that hangs or takes the process down
    # (a FIFO; an element length of gigabytes under the driver's address-space limit) must cost only itself
    singles = (
        (
            "dicm-then-garbage.dcm",
            _lazy(lambda: bytes(128) + b"DICM" + garbage(1000, "dcm-dicm")),
            _NORMAL_TIMEOUT,
        ),
        ("fifo.dcm", _fifo, _HANG_TIMEOUT),
        ("fifo.nii", _fifo, _HANG_TIMEOUT),
        ("to-dev-zero.nii.gz", _symlink("/dev/zero"), _NORMAL_TIMEOUT),
        ("to-dev-zero.nii", _symlink("/dev/zero"), _NORMAL_TIMEOUT),
        ("to-dev-urandom.dcm", _symlink("/dev/urandom"), _NORMAL_TIMEOUT),
    )
    for name, make, timeout in singles:
        stem, kind = name.split(".", 1)
        case = Case(f"{cls}/in-folder-{name}", cls, f"in/{name}", FAILED, make, f"out/{stem}_out")
        good = Case(
            f"{cls}/with-{name}/good.nii",
            cls,
            "in/good.nii",
            WRITTEN,
            _write(nii),
            "out/good_out.nii",
            True,
            props={"nifti": [24, 20, 3]},
        )
        invocations.append(
            Invocation(
                f"medical_{stem}_{kind.replace('.', '')}",
                [*_MEDICAL, "in", "-o", "out"],
                [case, good],
                1,
                timeout=timeout,
            )
        )
    return invocations


_NORMAL_TIMEOUT = 40.0


def _dicom_giant() -> bytes:
    """A DICOM whose header declares 65535 frames of 4096 x 4096 and holds a few bytes of pixel data."""
    data = dicom_bytes("bomb", rows=4, cols=4)
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4096, 4096, 65535
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# Malicious pickles as --weights
# ---------------------------------------------------------------------------------------------------

MARKER = "PWNED"
"""The file a malicious pickle would create in its invocation's folder (relative to the current folder)."""


class _OpenFile:
    """Unpickling calls ``open(MARKER, 'w')``: creates the marker."""

    def __reduce__(self):
        import builtins

        return (builtins.open, (MARKER, "w"))


class _System:
    """Unpickling runs a shell command that creates the marker."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


class _Eval:
    """Unpickling evaluates Python code that creates the marker."""

    def __reduce__(self):
        import builtins

        return (builtins.eval, (f"open({MARKER!r}, 'w')",))


def _torch_save(obj, legacy: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _evil_payloads() -> dict[str, Callable[[], bytes]]:
    def state(evil) -> dict:
        import torch

        return {"params_ema": {"conv_first.weight": torch.zeros(1), "conv_first.bias": evil}}

    return {
        "pickle-open.pth": lambda: pickle.dumps(_OpenFile(), protocol=2),
        "pickle-system.pt": lambda: pickle.dumps(_System(), protocol=4),
        "pickle-eval.pth": lambda: pickle.dumps({"params_ema": _Eval()}, protocol=2),
        "torch-zip-open.pth": lambda: _torch_save(_OpenFile()),
        "torch-zip-nested.pth": lambda: _torch_save(state(_System())),
        "torch-legacy-eval.pth": lambda: _torch_save({"params": _Eval()}, legacy=True),
        "pickle-named.safetensors": lambda: pickle.dumps(_OpenFile(), protocol=2),
        "zero-byte.pth": lambda: b"",
        "garbage.pth": functools.partial(garbage, 3000, "w-garbage"),
        "truncated-zip.pth": lambda: _torch_save(state(1))[:200],
    }


def malicious_weights() -> list[Invocation]:
    """Every payload through ``infer --weights`` (with ``--model``, and without: the file is inspected to
    detect its model) and all of them at once through ``inspect``; ``compress`` and ``decompress`` with a
    few (each of those builds its codec first, seconds on this CPU)."""
    cls = "weights"
    invocations = []
    image_make, _ = _good("weights-image.png")
    commands = {
        "infer": ["infer", *HAT, "--weights", "W", "in/image.png", "-o", "out"],
        "infer-detect": ["infer", "--task", "sr_x2", "-q", "--weights", "W", "in/image.png", "-o", "out"],
        "compress": [*_COMPRESS, "--weights", "W", "in/image.png", "-o", "out"],
        "decompress": ["decompress", "-q", "--weights", "W", "in/image.s2l", "-o", "out"],
    }
    codec_payloads = {"compress": "torch-zip-nested.pth", "decompress": "pickle-system.pt"}
    payloads = _evil_payloads()
    for payload, make in payloads.items():
        for command, argv in commands.items():
            if codec_payloads.get(command, payload) != payload:
                continue
            helper = Case(f"{cls}/{payload}/{command}/image", cls, "in/image.png", WRITTEN, image_make, None)
            if command == "decompress":
                helper = Case(
                    f"{cls}/{payload}/{command}/s2l", cls, "in/image.s2l", WRITTEN, _s2l(lambda d: d), None
                )
            weights = Case(f"{cls}/{payload}/{command}", cls, f"w/{payload}", ERROR, _write(make), None)
            argv_here = [f"w/{payload}" if part == "W" else part for part in argv]
            invocations.append(
                Invocation(
                    f"weights_{Path(payload).stem}_{command}",
                    argv_here,
                    [weights, helper],
                    rc=-1,
                    timeout=_NORMAL_TIMEOUT,
                    marker=MARKER,
                )
            )
    cases = [
        Case(f"{cls}/{payload}/inspect", cls, f"w/{payload}", ERROR, _write(make), None)
        for payload, make in payloads.items()
    ]
    argv = ["inspect", *(case.path for case in cases)]
    invocations.append(
        Invocation("weights_inspect", argv, cases, rc=1, timeout=_NORMAL_TIMEOUT, marker=MARKER)
    )
    return invocations


# ---------------------------------------------------------------------------------------------------
# All of it
# ---------------------------------------------------------------------------------------------------


def canary() -> list[Invocation]:
    """``-o`` pointing beside ``out``: the tree comparison must report the files written there."""
    make, props = _good("canary.png")
    case = Case(
        "canary/image.png", "canary", "in/image.png", WRITTEN, make, "elsewhere/image_out", props=props
    )
    return [
        Invocation("canary_outside_out", ["infer", *HAT, "in", "-o", "elsewhere"], [case], 0, canary=True)
    ]


CLASSES: dict[str, Callable[[], list[Invocation]]] = {
    "zero_byte": zero_byte,
    "truncated": truncated,
    "header_jpeg": header_inconsistent_jpeg,
    "bomb": bombs,
    "odd_valid": odd_valid,
    "garbage": garbage_with_suffixes,
    "symlink_fifo": symlinks,
    "collision": collisions,
    "compress": compress,
    "s2l": corrupt_s2l,
    "medical": medical,
    "weights": malicious_weights,
    "canary": canary,
}


def plan() -> list[Invocation]:
    """Every invocation and its cases, without writing anything."""
    invocations = [invocation for make in CLASSES.values() for invocation in make()]
    for invocation in invocations:  # the calls known to hang wait out their deadlines together
        if invocation.timeout == _HANG_TIMEOUT:
            invocation.together = "hangs"
    names = [invocation.name for invocation in invocations]
    assert len(names) == len(set(names)), "invocation names must be unique"
    ids = [case.id for invocation in invocations for case in invocation.cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return invocations


def fuzz_cases(invocations: list[Invocation]) -> list[Case]:
    """The cases that are fuzz inputs (the helpers: link targets, inputs of weight tests, excluded)."""
    return [
        case
        for invocation in invocations
        if not invocation.canary
        for case in invocation.cases
        if case.output or case.expect != WRITTEN
    ]


# ---------------------------------------------------------------------------------------------------
# Tiny models (random init) and writing
# ---------------------------------------------------------------------------------------------------


def _tests_on_path() -> None:
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))


def tiny_entries() -> list:
    """The zoo entries of the tiny models: tiny-hat x2, tiny-s2lic-q1, tiny-rwkv-ct-denoise."""
    _tests_on_path()
    import test_codec

    from conftest import tiny_entry, tiny_rwkv_entry

    return [tiny_entry(2), test_codec._entry("tiny-s2lic-q1"), tiny_rwkv_entry("ct_denoise")]


@contextlib.contextmanager
def tiny_zoo(weights_dir: Path) -> Iterator[None]:
    """Register the tiny models and point the weights folder at ``weights_dir`` while inside."""
    from types import MappingProxyType

    from restorer import zoo

    previous, previous_env = zoo.ZOO, os.environ.get("RESTORER_WEIGHTS_DIR")
    zoo.ZOO = MappingProxyType({**{entry.key: entry for entry in tiny_entries()}, **previous})
    os.environ["RESTORER_WEIGHTS_DIR"] = str(weights_dir)
    try:
        yield
    finally:
        zoo.ZOO = previous
        if previous_env is None:
            os.environ.pop("RESTORER_WEIGHTS_DIR", None)
        else:
            os.environ["RESTORER_WEIGHTS_DIR"] = previous_env


def make_weights(weights_dir: Path) -> None:
    """Write the tiny models' weights (fixed seeds)."""
    import torch

    _tests_on_path()
    import test_codec

    from restorer.archs import build_network

    from conftest import write_checkpoint

    weights_dir.mkdir(parents=True, exist_ok=True)
    hat, codec, rwkv = tiny_entries()
    write_checkpoint(hat, weights_dir / hat.weight_file, seed=2)
    model = test_codec.tiny_codec(seed=0, image=noise(64, 64, 3, "codec-calibration")).model
    torch.save({"params": model.state_dict()}, weights_dir / codec.weight_file)
    torch.manual_seed(0)
    net = build_network(rwkv.network_options())
    torch.save({rwkv.param_key: net.state_dict()}, weights_dir / rwkv.weight_file)


def sha256(path: Path) -> str | None:
    """The SHA-256 of a regular file (links followed only to regular files); None for anything else."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _jsonable(invocation: Invocation) -> dict:
    data = {
        "name": invocation.name,
        "argv": invocation.argv,
        "rc": invocation.rc,
        "timeout": invocation.timeout,
        "limits": invocation.limits,
        "marker": invocation.marker,
        "xfail": invocation.xfail,
        "together": invocation.together,
        "canary": invocation.canary,
        "cases": [],
    }
    for case in invocation.cases:
        item = {k: v for k, v in dataclasses.asdict(case).items() if k != "make"}
        data["cases"].append(item)
    return data


def generate(root: str | os.PathLike[str], only: list[str] | None = None) -> dict:
    """Write the tiny weights, every case of :func:`plan` (or of the invocations named in ``only``) and
    ``root/manifest.json``; returns the manifest."""
    root = Path(root)
    invocations = plan()
    root.mkdir(parents=True, exist_ok=True)
    make_weights(root / "weights")
    ctx = Context(root)
    manifest = {"weights": "weights", "invocations": []}
    for invocation in invocations:
        if only and invocation.name not in only:
            continue
        folder = root / invocation.name
        for sub in ("in", "tmp", "home"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for case in invocation.cases:
            if case.make is not None:
                case.make(folder / case.path, ctx)
        if invocation.setup is not None:
            invocation.setup(folder, ctx)
        entry = _jsonable(invocation)
        for case in entry["cases"]:
            case["sha256"] = sha256(folder / case["path"])
        manifest["invocations"].append(entry)
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="folder to write the cases into (created)")
    parser.add_argument("--only", nargs="*", help="invocation names to write (default: all)")
    parser.add_argument("--list", action="store_true", help="print the invocations and cases, write nothing")
    args = parser.parse_args(argv)
    if args.list:
        for invocation in plan():
            print(f"{invocation.name}: restorer {' '.join(invocation.argv)} (exit {invocation.rc})")
            for case in invocation.cases:
                print(
                    f"  {case.expect:8} {case.path}"
                    + (f"  [xfail: {case.xfail[:60]}...]" if case.xfail else "")
                )
        return 0
    manifest = generate(args.root, args.only)
    count = sum(len(inv["cases"]) for inv in manifest["invocations"])
    print(f"wrote {count} cases in {len(manifest['invocations'])} invocations to {args.root}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
