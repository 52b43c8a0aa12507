"""Reading and writing image files.

Every image inside ``restorer`` is a float32 ``H x W x C`` array in ``[0, 1]`` with RGB channel order
(``C`` is 3, or 1 for grayscale files), plus an optional separate ``H x W`` alpha plane. This module is
the only place that knows about file formats, bit depths, EXIF orientation and the quirks of the two
decoders it uses:

* Pillow decodes every 8-bit file: it understands all PNG/TIFF colour types (palette, gray+alpha,
  CMYK, associated alpha). It leaves JPEG/PNG/WebP pixels in stored order (we apply EXIF orientation
  ourselves) but, since Pillow 11, turns TIFFs upright while loading them and then drops the tag.
* OpenCV decodes 16-bit PNG and TIFF, because Pillow has no 16-bit RGB mode and silently reduces such
  files to 8 bits. ``IMREAD_UNCHANGED`` keeps the uint16 samples and ignores EXIF orientation for PNG,
  but OpenCV's TIFF decoder applies the TIFF ``Orientation`` tag itself whatever the flags say; see
  :func:`_cv2_applies_tiff_orientation`.

So the orientation still to apply is read *after* decoding, from what the decoder left undone.

Writing encodes in memory first and then replaces the target atomically, so an interrupted run never
leaves a truncated output that a later run would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import secrets
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from restorer.errors import ImageReadError, ImageWriteError, OutputExistsError, UsageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "OUTPUT_EXTS",
    "LoadedImage",
    "apply_orientation",
    "canonical_ext",
    "collect_images",
    "is_image_file",
    "output_path_for",
    "probe_size",
    "read_image",
    "regular_file_problem",
    "resolve_output_ext",
    "to_gray",
    "to_rgb",
    "write_atomically",
    "write_image",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
"""File suffixes (lowercase, with the dot) that :func:`collect_images` treats as images."""

MAX_IMAGE_PIXELS: int = 2**28
"""Largest image (width * height) :func:`read_image` accepts: about 268 megapixels, e.g. 16384 x 16384.

A decoded float32 RGB copy of such an image already takes 3 GiB, so anything larger is far more likely
a decompression bomb (a tiny file declaring a gigantic canvas) than a photograph. Raise it at run time
(``restorer.io.MAX_IMAGE_PIXELS = ...``) if you really need bigger inputs.
"""

OUTPUT_EXTS: tuple[str, ...] = ("png", "jpg", "webp", "tif", "bmp")
"""Formats :func:`write_image` can produce, by canonical suffix."""

PNG_COMPRESSION = 6
"""zlib level for PNG output: the libpng default, a good size/speed balance for large restored images."""

# Formats whose files can carry an alpha plane / 16-bit samples when we write them.
_ALPHA_EXTS = frozenset({"png", "webp", "tif"})
_HIGH_DEPTH_EXTS = frozenset({"png", "tif"})

# Suffix spellings accepted on output paths and in ``resolve_output_ext``, mapped to canonical names.
_EXT_ALIASES = {
    "png": "png",
    "jpg": "jpg",
    "jpeg": "jpg",
    "webp": "webp",
    "tif": "tif",
    "tiff": "tif",
    "bmp": "bmp",
}

# Pillow format names -> our canonical suffixes. MPO is what Pillow calls the multi-picture JPEGs many
# phones produce; for us they are plain JPEGs (we decode the first picture).
_PIL_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "BMP": "bmp"}

# EXIF tag 0x0112 (also the TIFF Orientation tag).
_ORIENTATION_TAG = 274
_ICC_PROFILE_TAG = 34675  # TIFF InterColorProfile

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GRAY_COLOR_TYPES = frozenset({0, 4})  # 0: gray, 4: gray + alpha
_TIFF_GRAY_PHOTOMETRICS = frozenset({0, 1})  # 0: min-is-white, 1: min-is-black

_PIL_UINT16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Pillow modes converted to RGB before we look at the samples (no alpha involved).
_PIL_TO_RGB_MODES = frozenset({"RGBX", "CMYK", "YCbCr", "LAB", "HSV"})

# Serialises our temporary change of Pillow's global decompression-bomb limit (see _pillow_open).
_PIL_LIMIT_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------------
# Finding input files
# ----------------------------------------------------------------------------------------------------


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has one of the :data:`IMAGE_EXTENSIONS` (any case). The file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _natural_key(name: str) -> tuple[tuple[object, ...], str]:
    """Sort key putting ``img2`` before ``img10``, case-insensitively.

    ``re.split`` with a capturing group puts the digit runs at the odd indices, so every position holds
    the same type across names and tuples compare without a str/int ``TypeError``. We do not use
    ``str.isdigit`` because it accepts characters like ``'²'`` that ``int`` rejects. The full name breaks
    ties (``a1`` vs ``a01``, ``A`` vs ``a``) so the order is total and reproducible.
    """
    parts = re.split(r"(\d+)", name)
    key = tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts))
    return key, name


def _scan_folder(
    folder: Path,
    recursive: bool,
    visited: set[Path],
    unreadable: list[tuple[Path, str]] | None = None,
) -> Iterator[Path]:
    """Yield the entries of ``folder`` that are not folders (natural order: regular files, and also
    FIFOs, sockets, devices and broken links, which the caller must refuse without opening), then
    those of its subfolders when ``recursive``.

    Hidden entries (``.name``) are ignored: they are never user images but things like ``.DS_Store``,
    macOS ``._photo.jpg`` resource forks (which have an image suffix but are not images) and our own
    temporary files. ``visited`` holds resolved folders so symlink loops are walked only once. A folder
    that cannot be listed raises :class:`ImageReadError`, or with ``unreadable`` is recorded there and
    the scan goes on.
    """
    try:
        resolved = folder.resolve()
        if resolved in visited:
            return
        visited.add(resolved)
        entries = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    except OSError as exc:
        error = ImageReadError(f"Cannot list folder {folder}: {exc.strerror or exc}")
        if unreadable is None:
            raise error from exc
        unreadable.append((folder, str(error)))
        return
    entries.sort(key=lambda entry: _natural_key(entry.name))
    subfolders = []
    for entry in entries:
        try:
            if entry.is_dir():
                subfolders.append(entry)
            else:  # special entries too (FIFOs, devices, dangling links): collect_images reports them
                yield entry
        except OSError as exc:  # e.g. a name past the path-length limit
            error = ImageReadError(f"Cannot read {_shortened(entry)}: {exc.strerror or exc}")
            if unreadable is None:
                raise error from exc
            unreadable.append((entry, str(error)))
    if recursive:
        for subfolder in subfolders:
            yield from _scan_folder(subfolder, recursive, visited, unreadable)


def _shortened(path: Path, keep: int = 120) -> str:
    """``path`` with its middle cut out when longer than ``2 * keep`` characters (paths past the OS
    limit run to thousands of characters)."""
    text = str(path)
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]}"


def collect_images(
    inputs: Sequence[str | os.PathLike[str]],
    recursive: bool = False,
    accept: Callable[[Path], bool] = is_image_file,
    unreadable: list[tuple[Path, str]] | None = None,
) -> tuple[list[Path], list[Path]]:
    """Expand files and folders given on the command line into a list of image files.

    Files are taken as given, folders contribute their files in natural order (``2.png`` before
    ``10.png``), and with ``recursive`` also those of their subfolders (after the folder's own files).
    Without ``recursive``, subfolders are ignored. Inputs are kept in the order given; a file reached
    twice (listed twice, or both directly and through its folder) is kept only at its first place.

    Returns ``(images, skipped)``: ``skipped`` holds files whose suffix is not an image suffix, so the
    caller can tell the user about them. Raises :class:`ImageReadError` for a path that does not exist.
    ``accept`` replaces the image-suffix test (e.g. to collect ``.s2l`` files the same way). With
    ``unreadable``, folders (and entries) that cannot be listed are appended there as ``(path, message)``
    and the rest is still collected; without it they raise :class:`ImageReadError`. Entries of a folder
    that ``accept`` takes but that are not regular files (FIFOs, sockets, devices, dangling or looping
    links; see :func:`regular_file_problem`) are never opened: they go to ``unreadable`` when given,
    and are left out otherwise.
    """
    images: list[Path] = []
    skipped: list[Path] = []
    seen: set[Path] = set()
    visited_folders: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        (images if accept(path) else skipped).append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for file in _scan_folder(path, recursive, visited_folders, unreadable):
                if accept(file):
                    # Checked before add(), which resolves the path (a link loop raises there) and
                    # before anything opens it (a FIFO blocks): a wanted entry that is not a regular
                    # file is a failure the user must hear about, not an image dropped in silence.
                    problem = regular_file_problem(file)
                    if problem is not None:
                        if unreadable is not None:
                            unreadable.append((file, f"Cannot read {_shortened(file)}: {problem}"))
                        continue
                add(file)
        elif path.exists():
            add(path)
        else:
            raise ImageReadError(f"No such file or folder: {path}")
    return images, skipped


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------


@dataclass
class LoadedImage:
    """A decoded image in the form every other part of ``restorer`` works with.

    Attributes:
        pixels: float32 ``H x W x C`` in ``[0, 1]``, RGB order; ``C`` is 1 for files stored as
            grayscale (gray, gray+alpha, 16-bit gray), else 3. Colour channels only.
        alpha: float32 ``H x W`` in ``[0, 1]``, or ``None`` when the file has no transparency.
        bit_depth: 8 or 16, the sample depth the file was decoded with; 32 for float TIFF samples.
        source_format: canonical suffix of the file's real format (``'png'``, ``'jpg'``, ``'webp'``,
            ``'tif'``, ``'bmp'``; other formats Pillow reads get their lowercase Pillow name).
        path: the file it was read from.
        icc_profile: the embedded ICC colour profile, if any (carried to outputs by
            :func:`write_image`; the pixels themselves are never converted).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    source_format: str
    path: Path
    icc_profile: bytes | None = None

    @property
    def is_gray(self) -> bool:
        return self.pixels.shape[2] == 1

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]


def apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an array stored with EXIF ``orientation`` (1..8) upright, like ``PIL.ImageOps.exif_transpose``.

    Works on ``H x W`` and ``H x W x C`` arrays; unknown values (0, 9, garbage) leave it unchanged. The
    result may be a view; callers that need contiguous memory copy it.
    """
    if orientation == 2:
        return array[:, ::-1]  # mirrored horizontally
    if orientation == 3:
        return array[::-1, ::-1]  # rotated 180
    if orientation == 4:
        return array[::-1]  # mirrored vertically
    if orientation == 5:
        return array.swapaxes(0, 1)  # transpose (mirror along the main diagonal)
    if orientation == 6:
        return np.rot90(array, k=-1)  # stored rotated 90 counter-clockwise: turn clockwise
    if orientation == 7:
        return array[::-1, ::-1].swapaxes(0, 1)  # transverse (mirror along the anti-diagonal)
    if orientation == 8:
        return np.rot90(array, k=1)  # stored rotated 90 clockwise: turn counter-clockwise
    return array


@cache
def _cv2_applies_tiff_orientation() -> bool:
    """Whether OpenCV's TIFF decoder turns images upright by itself.

    It does (OpenCV 4.x/5.0 honour the TIFF Orientation tag even with ``IMREAD_UNCHANGED`` and
    ``IMREAD_IGNORE_ORIENTATION``), so applying the tag again would rotate twice. Rather than hard-code
    that, decode a 2 x 1 probe tagged "rotated 90" once and look at the shape we get back.
    """
    buffer = io.BytesIO()
    Image.fromarray(np.array([[1, 2]], dtype=np.uint16)).save(
        buffer, format="TIFF", tiffinfo={_ORIENTATION_TAG: 6}
    )
    decoded = cv2.imdecode(np.frombuffer(buffer.getvalue(), np.uint8), cv2.IMREAD_UNCHANGED)
    return decoded is not None and decoded.shape[:2] == (2, 1)


@contextlib.contextmanager
def _pillow_bomb_limit_lifted() -> Iterator[None]:
    """Switch off Pillow's own decompression-bomb check while we open a file.

    Pillow refuses images above 2 x its ``Image.MAX_IMAGE_PIXELS`` (about 179 Mpx) and warns above it;
    we apply our own, configurable :data:`MAX_IMAGE_PIXELS` right after ``Image.open`` instead, with a
    message the user understands. The limit is a Pillow global, so changes are serialised by a lock and
    only span ``Image.open`` (a header read).
    """
    with _PIL_LIMIT_LOCK:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = previous


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot be read as a file (``"it is a FIFO, not a regular file"``, ``"no such file"``,
    ...), or None when it is a regular file (directly or through links). Nothing is opened: opening a
    FIFO blocks until a writer comes, and a device such as ``/dev/zero`` reads without end, so every
    reader of user-given paths asks this first."""
    try:
        mode = os.stat(path).st_mode  # follows links: a link to /dev/zero is a device, not a file
    except FileNotFoundError:
        if os.path.islink(path):
            return f"it is a symbolic link to {os.readlink(path)!r}, which does not exist"
        return "no such file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "it is a loop of symbolic links"
        return exc.strerror or str(exc)
    except ValueError as exc:  # e.g. a NUL byte in the name
        return str(exc)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "it is a folder"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "a special file"
    return f"it is {kind}, not a regular file"


def _read_bytes(path: Path) -> bytes:
    problem = regular_file_problem(path)
    if problem is not None:
        raise ImageReadError(f"Cannot read image {path}: {problem}")
    try:
        data = path.read_bytes()
    except IsADirectoryError as exc:
        raise ImageReadError(f"Cannot read image {path}: it is a folder") from exc
    except FileNotFoundError as exc:
        raise ImageReadError(f"Cannot read image {path}: no such file") from exc
    except OSError as exc:
        raise ImageReadError(f"Cannot read image {path}: {exc.strerror or exc}") from exc
    if not data:
        raise ImageReadError(f"Cannot read image {path}: the file is empty")
    return data


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF/TIFF/XMP orientation (1..8) Pillow finds, 1 when absent or unreadable."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # a broken EXIF block must not make the whole image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_SIMPLEJPEG_COLORSPACES = {"Gray": "GRAY", "CMYK": "CMYK", "YCCK": "CMYK"}


def _check_jpeg_stream(data: bytes) -> None:
    """Raise ``ValueError`` when libjpeg has anything to say about a JPEG's data.

    Pillow decodes through libjpeg's recovery: a file cut short, or whose header declares more pixels
    than its scan holds, comes back with the missing part filled in flat gray and no error at all. A
    strict decode (simplejpeg turns libjpeg's warnings into errors) finds exactly those files.
    """
    try:
        import simplejpeg
    except ImportError:  # pragma: no cover - a declared dependency; without it Pillow's checks remain
        return
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
    except ValueError as exc:
        raise ValueError(f"the JPEG header is corrupt ({exc})") from exc
    try:
        simplejpeg.decode_jpeg(data, colorspace=_SIMPLEJPEG_COLORSPACES.get(colorspace, "RGB"), strict=True)
    except ValueError as exc:
        raise ValueError(
            f"the JPEG data is damaged or incomplete ({exc}); a viewer would show the missing part gray"
        ) from exc


def _sixteen_bit_layout(image: Image.Image, data: bytes, fmt: str) -> tuple[bool, bool] | None:
    """``(is_gray, is_tiff)`` when the file stores more than 8 bits per sample and needs OpenCV, else None.

    Decided from the file header, never from Pillow's mode: Pillow opens a 16-bit RGB PNG as mode
    ``RGB`` and a 16-bit gray+alpha PNG as ``RGBA`` (both reduced to 8 bits).
    """
    if fmt == "png" and data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 26:
        bit_depth, color_type = data[24], data[25]
        if bit_depth == 16:
            return color_type in _PNG_GRAY_COLOR_TYPES, False
        return None
    if fmt == "tif":
        tags = getattr(image, "tag_v2", {})
        bits = tags.get(258, (8,))
        bits = bits if isinstance(bits, tuple) else (bits,)
        if max(bits, default=8) > 8:
            return tags.get(262) in _TIFF_GRAY_PHOTOMETRICS, True
    return None


_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


def _is_float_tiff(image: Image.Image) -> bool:
    formats = getattr(image, "tag_v2", {}).get(339, (1,))  # SampleFormat: 3 is IEEE float
    return 3 in (formats if isinstance(formats, tuple) else (formats,))


def _decode_tiff_with_tifffile(data: bytes, path: Path) -> tuple[np.ndarray, int, bytes | None]:
    """Decode the first page of a TIFF that Pillow and OpenCV cannot (16-bit gray+alpha, float samples).

    Returns ``(samples, orientation, icc_profile)``: ``H x W x C`` uint8, uint16 or float32 in stored
    order, C being gray, gray+alpha, RGB or RGBA, the TIFF Orientation tag still to apply, and the
    embedded ICC profile or None.
    """
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages[0]
        height, width = int(page.imagelength), int(page.imagewidth)
        if height * width > MAX_IMAGE_PIXELS:
            raise ImageReadError(
                f"Cannot read image {path}: {width} x {height} pixels is more than the limit of "
                f"{MAX_IMAGE_PIXELS} pixels (restorer.io.MAX_IMAGE_PIXELS)"
            )
        photometric = int(page.photometric)
        if photometric not in (1, 2):  # min-is-black gray, RGB
            raise ValueError(f"TIFF photometric interpretation {photometric} is not supported here")
        samples = page.asarray()
        if samples.ndim == 3 and int(page.planarconfig) == 2:  # separate planes: C x H x W
            samples = np.moveaxis(samples, 0, -1)
        extras = tuple(int(e) for e in page.extrasamples)
        orientation_tag = page.tags.get(_ORIENTATION_TAG)
        orientation = int(orientation_tag.value) if orientation_tag is not None else 1
        icc_tag = page.tags.get(_ICC_PROFILE_TAG)
        icc_profile = bytes(icc_tag.value) if icc_tag is not None and icc_tag.value else None
    if samples.ndim == 2:
        samples = samples[:, :, None]
    if samples.ndim != 3 or samples.shape[:2] != (height, width):
        raise ValueError(f"unexpected TIFF sample layout {samples.shape}")
    colour = 1 if photometric == 1 else 3
    has_alpha = bool(extras) and extras[0] in (1, 2)  # associated or unassociated alpha
    samples = samples[:, :, : colour + (1 if has_alpha else 0)]
    if samples.shape[2] < colour:
        raise ValueError(f"an RGB TIFF with {samples.shape[2]} samples per pixel")
    if samples.dtype.kind == "f":
        samples = samples.astype(np.float32, copy=False)
        if not np.isfinite(samples).all():
            raise ValueError("the float TIFF holds NaN or infinite values")
        low, high = float(samples.min()), float(samples.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"the float TIFF's values span {low:g}..{high:g}; restorer works on images in [0, 1] "
                "(scale the file first)"
            )
    elif samples.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"TIFF samples of type {samples.dtype} are not supported (8/16-bit or float)")
    if has_alpha and extras[0] == 1:  # associated (premultiplied) alpha -> straight alpha
        samples = _unpremultiply(samples, colour)
    return samples, orientation, icc_profile


def _unpremultiply(samples: np.ndarray, colour: int) -> np.ndarray:
    top = 1.0 if samples.dtype.kind == "f" else float(np.iinfo(samples.dtype).max)
    values = samples.astype(np.float32)
    alpha = values[:, :, colour:]
    np.divide(values[:, :, :colour] * top, alpha, out=values[:, :, :colour], where=alpha > 0)
    np.clip(values, 0, top, out=values)
    return values if samples.dtype.kind == "f" else np.rint(values).astype(samples.dtype)


def _decode_with_cv2(data: bytes, is_gray: bool) -> np.ndarray | None:
    """Decode a 16-bit PNG/TIFF with OpenCV into RGB(A) / gray(+alpha) channel order, keeping uint16."""
    # IMREAD_UNCHANGED: keep the depth and the alpha channel, and ignore EXIF orientation (PNG; OpenCV's
    # TIFF decoder applies the TIFF Orientation tag regardless, see _cv2_applies_tiff_orientation).
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.size == 0 or decoded.dtype == np.uint8:
        # uint8 means OpenCV silently reduced a layout it does not handle (e.g. 16-bit gray+alpha TIFF).
        return None
    if decoded.ndim == 2:
        return decoded[:, :, None]
    channels = decoded.shape[2]
    if is_gray and channels in (3, 4):
        # libpng expands gray+alpha to BGRA with B == G == R: keep one copy of the gray plane.
        return decoded[:, :, [0, 3]] if channels == 4 else decoded[:, :, :1]
    if channels == 3:
        return decoded[:, :, ::-1]
    if channels == 4:
        return decoded[:, :, [2, 1, 0, 3]]
    return decoded


def _decode_with_pillow(image: Image.Image) -> np.ndarray:
    """Decode with Pillow into uint8/uint16 ``H x W x C``: gray, gray+alpha, RGB or RGBA, in stored order."""
    image.load()
    mode = image.mode
    has_transparency = "transparency" in image.info
    if mode in _PIL_UINT16_MODES:
        # Pillow exposes these as little/big-endian uint16; normalise to the native byte order.
        return np.asarray(image).astype(np.uint16)[:, :, None]
    if mode == "P":
        palette_alpha = image.palette is not None and image.palette.mode == "RGBA"
        image = image.convert("RGBA" if has_transparency or palette_alpha else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("1", "L"):
        # A tRNS chunk on a gray PNG marks one gray value as transparent: turn it into real alpha.
        image = image.convert("LA" if has_transparency else "L")
    elif mode == "La":
        image = image.convert("LA")  # associated (premultiplied) alpha -> straight alpha
    elif mode == "RGB" and has_transparency:
        image = image.convert("RGBA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    elif mode in _PIL_TO_RGB_MODES:
        image = image.convert("RGB")  # CMYK is converted without a colour profile, like most viewers
    elif mode not in ("LA", "RGB", "RGBA"):
        raise ValueError(f"unsupported pixel mode {mode!r}")
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def _to_unit_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype.kind == "f":
        return np.array(samples, dtype=np.float32, order="C")
    scale = 65535.0 if samples.dtype == np.uint16 else 255.0
    result = samples.astype(np.float32, order="C")  # C order even for rotated views (torch wants it)
    result /= scale
    return result


def _check_pixel_limit(path: Path, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"Cannot read image {path}: {width} x {height} pixels is more than the limit of "
            f"{MAX_IMAGE_PIXELS} pixels (restorer.io.MAX_IMAGE_PIXELS); the file may be a "
            "decompression bomb"
        )


_WEBP_HEAD_BYTES = 64
"""Bytes of a file enough for :func:`_webp_size`: the RIFF header and the first chunk's size fields."""


def _is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of a WebP from its first chunk, without decoding; None when it is not there.

    The extended layout (``VP8X``) states the canvas (24-bit width - 1 and height - 1): what an animated
    file's decoder allocates. A simple file's size is in its bitstream header: lossy ``VP8`` (a 3-byte
    frame tag, the start code 9d 01 2a, then 14-bit width and height; the top two bits are scaling) or
    lossless ``VP8L`` (the signature byte 0x2f, then 14-bit width - 1 and height - 1)."""
    if not _is_webp(data) or len(data) < 20:
        return None
    kind, body = data[12:16], data[20:]
    if kind == b"VP8X" and len(body) >= 10:
        return int.from_bytes(body[7:10], "little") + 1, int.from_bytes(body[4:7], "little") + 1
    if kind == b"VP8 " and len(body) >= 10 and body[3:6] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", body[6:10])
        return height & 0x3FFF, width & 0x3FFF
    if kind == b"VP8L" and len(body) >= 5 and body[0] == 0x2F:
        bits = int.from_bytes(body[1:5], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    return None


def probe_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """``(height, width)`` from the file's header without decoding its pixels; None when the header
    cannot be read (:func:`read_image` then says why)."""
    try:
        if regular_file_problem(path) is not None:  # opening a FIFO would block
            return None
        with open(path, "rb") as stream:
            head = stream.read(_WEBP_HEAD_BYTES)
        if _is_webp(head):
            # Pillow's WebP plugin decodes (allocating the whole canvas) inside Image.open itself
            return _webp_size(head)
        with _pillow_bomb_limit_lifted(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                width, height = image.size
    except Exception:
        return None
    return height, width


def read_image(path: str | os.PathLike[str]) -> LoadedImage:
    """Read a PNG, JPEG, WebP, TIFF or BMP file (8 or 16 bits per sample) into a :class:`LoadedImage`.

    EXIF orientation is applied, so the pixels are upright. Palette images become RGB, or RGB + alpha
    when the palette has transparency; CMYK/YCbCr become RGB; files stored as a single gray channel
    (with or without alpha) stay one channel, while RGB files stay RGB even when all channels are equal.
    ``bit_depth`` is 16 exactly when the decoder returns uint16 samples, whatever their values.

    Raises :class:`ImageReadError` (``"Cannot read image <path>: <reason>"``) for anything that is not a
    readable image: missing or empty files, folders, garbage or truncated data, and images larger than
    :data:`MAX_IMAGE_PIXELS`.
    """
    path = Path(path)
    data = _read_bytes(path)
    if _is_webp(data):
        # Pillow's WebP plugin allocates the whole canvas inside Image.open, before the size check
        # below could refuse it: a 38-byte file declaring 16383 x 16383 took 4.4 GB. So the header first.
        size = _webp_size(data)
        if size is not None:
            _check_pixel_limit(path, size[1], size[0])
    try:
        with _pillow_bomb_limit_lifted(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's "truncated EXIF" notes: not our user's problem
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        if data.startswith(_TIFF_MAGICS):  # a TIFF layout Pillow lacks: 16-bit gray+alpha, float RGB
            return _read_tiff_with_tifffile(data, path)
        raise ImageReadError(f"Cannot read image {path}: not a recognised image format") from exc
    except Exception as exc:
        raise ImageReadError(f"Cannot read image {path}: {exc}") from exc
    if image.format == "TIFF" and _is_float_tiff(image):  # Pillow has float gray ("F") only, no RGB
        image.close()
        return _read_tiff_with_tifffile(data, path)

    with image:
        width, height = image.size
        _check_pixel_limit(path, width, height)
        source_format = _PIL_FORMATS.get(image.format or "", (image.format or "unknown").lower())
        icc_profile = image.info.get("icc_profile") or None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                samples = None
                if source_format == "jpg":
                    _check_jpeg_stream(data)
                layout = _sixteen_bit_layout(image, data, source_format)
                if layout is not None:
                    is_gray, is_tiff = layout
                    samples = _decode_with_cv2(data, is_gray)
                    if samples is None and not is_tiff:
                        raise ValueError("the 16-bit data is corrupt or truncated")
                    if samples is None and is_gray:  # OpenCV reduces 16-bit gray+alpha to 8 bits
                        samples, orientation, icc_profile = _decode_tiff_with_tifffile(data, path)
                    elif samples is not None:
                        if is_tiff:
                            orientation = 1 if _cv2_applies_tiff_orientation() else _exif_orientation(image)
                        elif b"eXIf" in data or b"XML:com.adobe.xmp" in data:
                            # Pillow fully decodes a PNG to look for an eXIf chunk after the pixel data;
                            # skip that second decode when no orientation can be there at all.
                            orientation = _exif_orientation(image)
                        else:
                            orientation = 1
                    # OpenCV cannot decode every TIFF flavour (e.g. 16-bit CMYK): Pillow then reads it
                    # at 8 bits, which beats refusing the file.
                if samples is None:
                    samples = _decode_with_pillow(image)
                    # Read after decoding: Pillow (>= 11) turns TIFFs upright while loading them and then
                    # drops the tag, so what is left here is exactly what still needs doing.
                    orientation = _exif_orientation(image)
        except ImageReadError:
            raise
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            raise ImageReadError(f"Cannot read image {path}: {reason}") from exc

    return _loaded(samples, orientation, source_format, path, icc_profile)


def _read_tiff_with_tifffile(data: bytes, path: Path) -> LoadedImage:
    try:
        samples, orientation, icc_profile = _decode_tiff_with_tifffile(data, path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"Cannot read image {path}: {str(exc) or type(exc).__name__}") from exc
    return _loaded(samples, orientation, "tif", path, icc_profile)


def _loaded(
    samples: np.ndarray, orientation: int, source_format: str, path: Path, icc_profile: bytes | None
) -> LoadedImage:
    """Upright float pixels and alpha from decoded ``H x W x C`` samples (uint8, uint16 or float32)."""
    if samples.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageReadError(f"Cannot read image {path}: unsupported sample type {samples.dtype}")
    samples = apply_orientation(samples, orientation)
    bit_depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(samples.dtype, 32)
    color_channels = 1 if samples.shape[2] in (1, 2) else 3
    pixels = _to_unit_float(samples[:, :, :color_channels])
    alpha = _to_unit_float(samples[:, :, color_channels]) if samples.shape[2] > color_channels else None
    return LoadedImage(
        pixels=pixels,
        alpha=alpha,
        bit_depth=bit_depth,
        source_format=source_format,
        path=path,
        icc_profile=icc_profile,
    )


# ----------------------------------------------------------------------------------------------------
# Channel helpers
# ----------------------------------------------------------------------------------------------------


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """RGB ``H x W x 3`` -> luma ``H x W x 1`` (ITU-R BT.601 weights, as OpenCV and Pillow use).

    One-channel input is returned unchanged.
    """
    if pixels.ndim == 2:
        return pixels[:, :, None]
    if pixels.shape[2] == 1:
        return pixels
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (pixels[:, :, :3].astype(np.float32) @ weights)[:, :, None]


def to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Gray ``H x W x 1`` (or ``H x W``) -> ``H x W x 3`` by repeating the channel; RGB comes back as is."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels


# ----------------------------------------------------------------------------------------------------
# Output names
# ----------------------------------------------------------------------------------------------------


def canonical_ext(ext: str) -> str | None:
    """The canonical output suffix (``'jpg'`` for ``'.JPEG'``) of a format we write, else None."""
    return _EXT_ALIASES.get(ext.lower().lstrip("."))


def resolve_output_ext(ext: str, image: LoadedImage) -> str:
    """The output suffix (no dot) for ``ext`` in ``'auto', 'png', 'jpg', 'webp', 'tif'`` (or ``'bmp'``).

    ``'auto'`` keeps the input's format, except that it picks PNG when the input format is not one we
    write, or when the image has alpha or 16-bit samples that the input's format could not store.
    ``'jpeg'`` and ``'tiff'`` are accepted as spellings of ``'jpg'`` and ``'tif'``.
    """
    key = ext.lower().lstrip(".")
    if key != "auto":
        if key not in _EXT_ALIASES:
            choices = ", ".join(("auto", *OUTPUT_EXTS))
            raise UsageError(f"Unknown output format {ext!r}; choose one of: {choices}")
        return _EXT_ALIASES[key]
    source = _EXT_ALIASES.get(image.source_format.lower())
    if source is None:
        return "png"
    if image.has_alpha and source not in _ALPHA_EXTS:
        return "png"
    if image.bit_depth > 8 and source not in _HIGH_DEPTH_EXTS:
        return "png"
    return source


def output_path_for(
    input_path: str | os.PathLike[str], out_dir: str | os.PathLike[str], suffix: str, ext: str
) -> Path:
    """``<out_dir>/<stem>_<suffix>.<ext>``, or ``<out_dir>/<stem>.<ext>`` when ``suffix`` is empty."""
    stem = Path(input_path).stem
    name = f"{stem}_{suffix}" if suffix else stem
    return Path(out_dir) / f"{name}.{ext.lstrip('.')}"


# ----------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------


_QUANTIZE_ROWS = 256


def _quantize(values: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """Float ``[0, 1]`` -> uint8/uint16, clipping out-of-range values and mapping NaN to 0."""
    top = np.iinfo(dtype).max
    values = np.asarray(values)
    result = np.empty(values.shape, dtype=dtype)
    # in bands of rows: the float temporaries stay small even for an 8K image (hundreds of MB as floats)
    for start in range(0, max(values.shape[0], 1), _QUANTIZE_ROWS):
        band = np.array(values[start : start + _QUANTIZE_ROWS], dtype=np.float32)
        np.nan_to_num(band, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        np.clip(band, 0.0, 1.0, out=band)
        band *= top
        result[start : start + _QUANTIZE_ROWS] = np.rint(band, out=band)
    return result


def _clipped_float(values: np.ndarray) -> np.ndarray:
    """Float32 in ``[0, 1]`` with NaN as 0, for float TIFF output (no quantisation)."""
    result = np.array(values, dtype=np.float32)
    np.nan_to_num(result, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(result, 0.0, 1.0, out=result)


def _encode_tiff(samples: np.ndarray, has_alpha: bool, icc_profile: bytes | None = None) -> bytes:
    """Encode a TIFF with tifffile, which (unlike OpenCV) marks the 4th channel as unassociated alpha.

    OpenCV writes RGBA TIFFs without the ExtraSamples tag, so other programs see a fourth colour
    channel rather than transparency. tifffile is a hard dependency of scikit-image; zlib compression is
    built in (LZW would need the optional imagecodecs package).
    """
    try:
        import tifffile
    except ImportError as exc:  # pragma: no cover - scikit-image always brings tifffile
        raise ValueError("writing TIFF needs the 'tifffile' package (pip install tifffile)") from exc
    buffer = io.BytesIO()
    channels = samples.shape[2]
    tifffile.imwrite(
        buffer,
        samples[:, :, 0] if channels == 1 else samples,
        photometric="minisblack" if channels in (1, 2) else "rgb",
        planarconfig=None if channels == 1 else "contig",
        extrasamples=["unassalpha"] if has_alpha else None,
        compression="zlib",
        metadata=None,  # no tifffile JSON in ImageDescription
        iccprofile=icc_profile or None,
    )
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_gray_alpha(samples: np.ndarray) -> bytes:
    """A PNG of colour type 4 (gray + alpha) from ``H x W x 2`` uint8 or uint16 samples.

    Neither encoder at hand writes it: OpenCV encodes 1, 3 or 4 channels only, and Pillow's ``LA`` is
    8-bit. Every row uses the Up filter (each byte minus the one above; PNG's filters work on bytes,
    so 16-bit samples need nothing special), computed for the whole image at once."""
    height, width = samples.shape[:2]
    depth = 16 if samples.dtype == np.uint16 else 8
    rows = np.ascontiguousarray(samples, dtype=">u2" if depth == 16 else np.uint8).reshape(height, -1)
    raw = rows.view(np.uint8)
    filtered = raw.copy()
    filtered[1:] -= raw[:-1]  # uint8 arithmetic wraps modulo 256, as the filter is defined
    lines = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)  # 2: the Up filter
    header = struct.pack(">IIBBBBB", width, height, depth, 4, 0, 0, 0)
    return (
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(lines.tobytes(), PNG_COMPRESSION))
        + _png_chunk(b"IEND", b"")
    )


def _encode(
    pixels: np.ndarray,
    alpha: np.ndarray | None,
    ext: str,
    bit_depth: int,
    quality: int,
    icc_profile: bytes | None = None,
) -> bytes:
    """Encode float pixels (+ alpha, + an ICC profile where the format has room) into ``ext`` bytes."""
    if ext not in _ALPHA_EXTS:
        alpha = None  # JPEG cannot store it; BMP alpha is ignored by most readers
    if ext not in _HIGH_DEPTH_EXTS:
        bit_depth = 8
    elif bit_depth == 32 and ext != "tif":
        bit_depth = 16  # only TIFF stores float samples
    if bit_depth == 32:
        samples = _clipped_float(pixels)
        alpha_samples = None if alpha is None else _clipped_float(alpha)
    else:
        dtype = np.uint16 if bit_depth == 16 else np.uint8
        samples = _quantize(pixels, dtype)
        alpha_samples = None if alpha is None else _quantize(alpha, dtype)
    if alpha_samples is not None:
        # Gray + alpha stays two channels where the format has them (PNG colour type 4, a TIFF with one
        # extra sample): written as RGBA it would triple the gray data and read back as colour. WebP
        # has no gray at all, so RGBA there.
        colour = samples if samples.shape[2] == 3 or ext in ("png", "tif") else to_rgb(samples)
        samples = np.concatenate([colour, alpha_samples[:, :, None]], axis=2)

    gray = samples.shape[2] in (1, 2)
    if icc_profile and not _profile_fits(icc_profile, gray=gray):
        icc_profile = None  # e.g. an RGB profile on a gray output: wrong, so better none
    if ext == "tif":
        return _encode_tiff(samples, has_alpha=alpha_samples is not None, icc_profile=icc_profile)

    channels = samples.shape[2]
    if channels == 2:  # only PNG gets here (see above); OpenCV cannot encode two channels
        encoded_png = _png_gray_alpha(samples)
        return _png_with_icc(encoded_png, icc_profile) if icc_profile else encoded_png
    if channels == 3:
        samples = samples[:, :, ::-1]  # OpenCV wants BGR
    elif channels == 4:
        samples = samples[:, :, [2, 1, 0, 3]]
    samples = np.ascontiguousarray(samples)
    params: list[int] = []
    if ext == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    elif ext == "jpg":
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == "webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, encoded = cv2.imencode(f".{ext}", samples, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode {ext.upper()}")
    if icc_profile and ext in _ICC_EMBEDDERS:
        return _ICC_EMBEDDERS[ext](encoded.tobytes(), icc_profile)
    return encoded.tobytes()


def _profile_fits(profile: bytes, gray: bool) -> bool:
    """Whether an ICC profile's colour space (header bytes 16..20) is the output's: gray or RGB."""
    return len(profile) >= 128 and profile[16:20] == (b"GRAY" if gray else b"RGB ")


def _png_with_icc(png: bytes, profile: bytes) -> bytes:
    """Insert an ``iCCP`` chunk right after ``IHDR`` (it must precede ``PLTE`` and ``IDAT``)."""
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, then IHDR's length + type, 13 data bytes, CRC
    payload = b"ICC profile\x00\x00" + zlib.compress(profile)  # name, NUL, compression method 0
    chunk = struct.pack(">I", len(payload)) + b"iCCP" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iCCP" + payload))
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def _jpeg_with_icc(jpeg: bytes, profile: bytes) -> bytes:
    """Insert the profile as ``APP2 ICC_PROFILE`` segments (at most 65,519 bytes each) after the
    leading ``SOI`` and ``APP0``/``APP1`` segments."""
    position = 2
    while jpeg[position : position + 1] == b"\xff" and jpeg[position + 1] in (0xE0, 0xE1):
        position += 2 + struct.unpack(">H", jpeg[position + 2 : position + 4])[0]
    pieces = [profile[i : i + 65519] for i in range(0, len(profile), 65519)]
    segments = b"".join(
        b"\xff\xe2"
        + struct.pack(">H", 2 + 14 + len(piece))
        + b"ICC_PROFILE\x00"
        + bytes((number, len(pieces)))
        + piece
        for number, piece in enumerate(pieces, 1)
    )
    return jpeg[:position] + segments + jpeg[position:]


def _webp_with_icc(webp: bytes, profile: bytes) -> bytes:
    """Add an ``ICCP`` chunk: it needs the extended (``VP8X``) layout, with the ICC flag set."""
    chunks = []
    position = 12
    while position + 8 <= len(webp):
        kind, size = webp[position : position + 4], struct.unpack("<I", webp[position + 4 : position + 8])[0]
        chunks.append((kind, webp[position + 8 : position + 8 + size]))
        position += 8 + size + (size & 1)
    if chunks and chunks[0][0] == b"VP8X":
        flags = chunks[0][1][0] | 0x20
        vp8x = bytes((flags,)) + chunks[0][1][1:]
        rest = chunks[1:]
    else:
        width, height = _webp_canvas(chunks[0])
        has_alpha = chunks[0][0] == b"VP8L" and bool(chunks[0][1][4] & 0x10)
        flags = 0x20 | (0x10 if has_alpha else 0)
        size = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        vp8x = bytes((flags, 0, 0, 0)) + size
        rest = chunks
    ordered = [(b"VP8X", vp8x), (b"ICCP", profile), *rest]
    body = b"".join(
        kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) & 1) for kind, data in ordered
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def _webp_canvas(chunk: tuple[bytes, bytes]) -> tuple[int, int]:
    kind, data = chunk
    if kind == b"VP8 ":  # lossy: 3-byte frame tag, start code, then 14-bit width and height
        return struct.unpack("<H", data[6:8])[0] & 0x3FFF, struct.unpack("<H", data[8:10])[0] & 0x3FFF
    if kind == b"VP8L":  # lossless: signature byte, then 14-bit width-1 and height-1
        bits = int.from_bytes(data[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    raise ValueError(f"unexpected WebP chunk {kind!r}")


_ICC_EMBEDDERS = {"png": _png_with_icc, "jpg": _jpeg_with_icc, "webp": _webp_with_icc}


def _same_file(target: Path, protected: Collection[str | os.PathLike[str]]) -> Path | None:
    """The entry of ``protected`` that ``target`` would overwrite, if any.

    Resolved paths catch ``./a.png`` vs ``a.png`` and symlinks; ``samefile`` also catches hard links and
    case-insensitive file systems where two different spellings name one file.
    """
    resolved = target.resolve()
    for item in protected:
        candidate = Path(item)
        if candidate.resolve() == resolved:
            return candidate
        with contextlib.suppress(OSError):
            if target.exists() and os.path.samefile(candidate, target):
                return candidate
    return None


def _open_temp_file(folder: Path, name: str) -> tuple[int, Path]:
    """Create ``<folder>/.<name>.<random>.tmp`` exclusively and return its descriptor and path.

    Hidden so folder scans skip it. Created with ``os.open(..., 0o666)`` rather than ``mkstemp`` so the
    final file gets the usual umask-based permissions instead of mkstemp's 0600. The name part is
    shortened so the temporary name stays within file-name length limits.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = folder / f".{name[:48]}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:
            continue


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself; best effort (not possible on Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_into_place_unless_taken(temp: Path, target: Path) -> None:
    """Give ``temp`` the name ``target`` unless that name is taken (then :class:`OutputExistsError`).

    A hard link fails when the name exists, so a file another program creates meanwhile is never
    replaced. File systems without hard links (FAT, some network shares) fall back to check-then-rename.
    """
    try:
        os.link(temp, target)
    except FileExistsError:
        raise OutputExistsError.at(target) from None
    except OSError:
        if os.path.lexists(target):
            raise OutputExistsError.at(target) from None
        os.replace(temp, target)
        return
    with contextlib.suppress(OSError):
        temp.unlink()


def write_atomically(target: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``target`` and rename it over ``target``.

    Readers see either the old file or the complete new one. On any exception, KeyboardInterrupt
    included, the temporary file is removed and the exception propagates. Returns ``target`` as a Path.
    With ``overwrite=False`` an existing ``target`` (a file, folder or link of that name) is left alone
    and :class:`~restorer.errors.OutputExistsError` is raised instead.
    """
    target = Path(target)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError.at(target)
    fd, temp = _open_temp_file(folder, target.name)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        if overwrite:
            os.replace(temp, target)
        else:
            _move_into_place_unless_taken(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    _fsync_folder(folder)
    return target


def write_image(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    quality: int = 95,
    *,
    protect: Collection[str | os.PathLike[str]] = (),
    overwrite: bool = True,
    icc_profile: bytes | None = None,
) -> Path:
    """Write float ``[0, 1]`` RGB/gray pixels (and optional alpha) atomically; return the path written.

    Args:
        path: target file; its suffix picks the format (png, jpg/jpeg, webp, tif/tiff, bmp). Missing
            parent folders are created.
        pixels: ``H x W x 3`` RGB or ``H x W x 1`` / ``H x W`` gray; values are clipped to ``[0, 1]``
            and rounded to the nearest integer level.
        alpha: optional ``H x W`` (or ``H x W x 1``) plane in ``[0, 1]``. Kept for png, webp and tif;
            dropped for jpg and bmp. Gray + alpha stays gray + alpha in png and tif; webp, which has
            no gray, stores it as RGBA.
        bit_depth: 8, 16 or 32 (float samples). 32 is kept for tif and becomes 16 for png; 16 is kept
            for png and tif; jpg, webp and bmp are always 8-bit.
        quality: 1..100, used by jpg and webp.
        protect: files that must never be overwritten (typically the inputs); writing onto one of them
            raises :class:`ImageWriteError`.
        overwrite: replace an existing ``path``; when False an existing file is left as it is and
            :class:`~restorer.errors.OutputExistsError` (an ``ImageWriteError``) is raised.
        icc_profile: an ICC colour profile to embed (the input's, so colour-managed viewers show the
            output as they showed the input); png, jpg, webp and tif carry it, bmp drops it.

    Raises:
        ImageWriteError: bad arguments, a protected or unwritable target, or an encoder failure. No
        partial file is left behind in any failure (KeyboardInterrupt included; it propagates as is).
    """
    target = Path(path)
    ext = _EXT_ALIASES.get(target.suffix.lower().lstrip("."))
    if ext is None:
        choices = ", ".join(sorted(_EXT_ALIASES))
        raise ImageWriteError(
            f"Cannot write image {target}: unknown format {target.suffix or '(no suffix)'!r}; "
            f"use one of: {choices}"
        )
    if bit_depth not in (8, 16, 32):
        raise ImageWriteError(
            f"Cannot write image {target}: bit depth must be 8, 16 or 32 (float), not {bit_depth}"
        )
    if not 1 <= quality <= 100:
        raise ImageWriteError(f"Cannot write image {target}: quality must be 1..100, not {quality}")
    pixels = np.asarray(pixels)
    if not np.issubdtype(pixels.dtype, np.floating):
        # Integer samples here are nearly always a forgotten "/ 255": refuse rather than write white.
        raise ImageWriteError(
            f"Cannot write image {target}: pixels must be floating point in [0, 1], got {pixels.dtype}"
        )
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3) or 0 in pixels.shape[:2]:
        raise ImageWriteError(
            f"Cannot write image {target}: pixels must be H x W x 1 or H x W x 3, got shape {pixels.shape}"
        )
    if alpha is not None:
        alpha = np.asarray(alpha)
        if alpha.ndim == 3 and alpha.shape[2] == 1:
            alpha = alpha[:, :, 0]
        if alpha.shape != pixels.shape[:2]:
            raise ImageWriteError(
                f"Cannot write image {target}: alpha shape {alpha.shape} does not match "
                f"the image size {pixels.shape[:2]}"
            )
    clash = _same_file(target, protect)
    if clash is not None:
        raise ImageWriteError(
            f"Refusing to write {target}: it would overwrite the input {clash}; choose another output "
            "folder or suffix"
        )
    if not overwrite and os.path.lexists(target):
        raise OutputExistsError.at(target)  # before encoding: nothing is spent on an output that is kept

    try:
        data = _encode(pixels, alpha, ext, bit_depth, quality, icc_profile)
    except (cv2.error, ValueError, TypeError, OSError) as exc:
        raise ImageWriteError(f"Cannot write image {target}: encoding failed ({exc})") from exc
    try:
        write_atomically(target, data, overwrite=overwrite)
    except OSError as exc:
        raise ImageWriteError(f"Cannot write image {target}: {exc.strerror or exc}") from exc
    return target
