"""The ``.s2l`` file format: one S2LIC-coded image.

Layout (version 2, all integers little-endian)::

    offset  size  field
    0       8     magic  b"\\x89S2L\\r\\n\\x1a\\n"  (PNG-style: catches text-mode and 7-bit mangling)
    8       2     format version (2; version 1 is read too)
    10      2     flags (0; a reader rejects unknown flags)
    12      1     length L of the model variant name
    13      L     model variant, UTF-8 (the zoo name, e.g. "s2lic-small-q2")
    .       8     weights fingerprint: SHA-256 prefix of the weights that coded the file
    .       4     entropy-table fingerprint: SHA-256 prefix of the CDF tables after update()
    .       4,4   original height, width (any size; the codec pads to 64 and crops back)
    .       1     original channels (1 gray, 3 RGB)
    .       1     thread count of the entropy model (the decoder must use the same)
    .       1     device type that ran the entropy model (0 cpu, 1 cuda, 2 other; decode on the same)
    .       2     levels of the Gaussian scale table (version 2 only; version 1 files used 64)
    .       2x3   y latent shape (C, h, w)
    .       2x3   z latent shape (C, h, w)
    .       8     symbol digest: SHA-256 prefix of every coded symbol (checked after decoding)
    .       1     number of streams S (2: y, then z)
    .       4xS   stream lengths
    .       ...   the streams, back to back
    end-4   4     CRC-32 of every byte before it

A reader never trusts a length before checking it against the bytes it has, so a truncated, padded
or corrupted file, or one that is not an ``.s2l`` file at all, raises :class:`S2LFormatError` with a
message that says which.

Version 2 added the scale-table level count: the decoder must rebuild the encoder's tables, and
version 1 always used CompressAI's 64 levels.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from restorer.errors import RestorerError

__all__ = [
    "DEVICE_KINDS",
    "FORMAT_VERSION",
    "MAGIC",
    "READABLE_VERSIONS",
    "S2LFormatError",
    "S2LHeader",
    "VERSION1_SCALE_LEVELS",
    "pack",
    "unpack",
]

MAGIC = b"\x89S2L\r\n\x1a\n"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
VERSION1_SCALE_LEVELS = 64
_MAX_SCALE_LEVELS = 4096
_CHECKSUM_SIZE = 4
_MAX_VARIANT = 255
_MAX_STREAMS = 8
DEVICE_KINDS = ("cpu", "cuda", "other")


class S2LFormatError(RestorerError):
    """A file that is not a valid ``.s2l`` file (wrong magic, newer version, truncated, corrupted)."""


@dataclass(frozen=True)
class S2LHeader:
    """Everything in an ``.s2l`` file except the streams."""

    variant: str
    weights_fingerprint: bytes  # 8 bytes
    table_fingerprint: bytes  # 4 bytes
    height: int
    width: int
    channels: int
    threads: int
    device_kind: str  # "cpu", "cuda" or "other"
    y_shape: tuple[int, int, int]
    z_shape: tuple[int, int, int]
    digest: bytes  # 8 bytes
    scale_levels: int  # levels of the Gaussian scale table the streams were coded with
    version: int = FORMAT_VERSION


def pack(header: S2LHeader, streams: list[bytes]) -> bytes:
    """Serialise a header and its streams (y first, then z) into the bytes of an ``.s2l`` file."""
    variant = header.variant.encode("utf-8")
    if len(variant) > _MAX_VARIANT:
        raise ValueError(f"variant name longer than {_MAX_VARIANT} bytes: {header.variant!r}")
    if len(header.weights_fingerprint) != 8 or len(header.table_fingerprint) != 4 or len(header.digest) != 8:
        raise ValueError("fingerprints are 8 (weights), 4 (tables) and 8 (digest) bytes")
    if header.channels not in (1, 3) or not 1 <= header.threads <= 255:
        raise ValueError(
            f"channels must be 1 or 3 and threads 1..255, got {header.channels}, {header.threads}"
        )
    if not 0 < len(streams) <= _MAX_STREAMS:
        raise ValueError(f"1..{_MAX_STREAMS} streams expected, got {len(streams)}")
    if not 2 <= header.scale_levels <= _MAX_SCALE_LEVELS:
        raise ValueError(f"scale_levels must be 2..{_MAX_SCALE_LEVELS}, got {header.scale_levels}")
    parts = [
        MAGIC,
        struct.pack("<HHB", FORMAT_VERSION, 0, len(variant)),
        variant,
        header.weights_fingerprint,
        header.table_fingerprint,
        struct.pack(
            "<IIBBB",
            header.height,
            header.width,
            header.channels,
            header.threads,
            DEVICE_KINDS.index(header.device_kind if header.device_kind in DEVICE_KINDS else "other"),
        ),
        struct.pack("<H", header.scale_levels),
        struct.pack("<6H", *header.y_shape, *header.z_shape),
        header.digest,
        struct.pack("<B", len(streams)),
        struct.pack(f"<{len(streams)}I", *(len(s) for s in streams)),
        *streams,
    ]
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


class _Reader:
    """Bounds-checked sequential reads over the header bytes."""

    def __init__(self, data: bytes, end: int) -> None:
        self.data = data
        self.pos = 0
        self.end = end

    def take(self, size: int, what: str) -> bytes:
        if self.pos + size > self.end:
            raise S2LFormatError(f"the file is truncated (it ends inside the {what})")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def unpack(data: bytes) -> tuple[S2LHeader, list[bytes]]:
    """Parse and verify the bytes of an ``.s2l`` file; returns the header and the streams.

    Raises:
        S2LFormatError: wrong magic number, unsupported version or flags, truncated or over-long data,
            or a checksum mismatch (corruption).
    """
    data = bytes(data)
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise S2LFormatError("this is not an S2LIC (.s2l) file: wrong magic number")
    reader = _Reader(data, len(data))
    reader.take(len(MAGIC), "magic number")
    version, flags, variant_len = reader.unpack("<HHB", "version")
    if version not in READABLE_VERSIONS:
        raise S2LFormatError(
            f"the file uses .s2l format version {version}; this restorer reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (update restorer, or re-encode the image)"
        )
    if flags:
        raise S2LFormatError(
            f"the file sets unknown flags 0x{flags:04x} (corrupted, or from a newer restorer)"
        )
    if len(data) < len(MAGIC) + 5 + _CHECKSUM_SIZE:
        raise S2LFormatError("the file is truncated (shorter than an empty header)")
    # Parse the header inside the checksummed body, then verify the checksum before trusting any field.
    reader.end = len(data) - _CHECKSUM_SIZE
    try:
        variant = reader.take(variant_len, "model name").decode("utf-8")
    except UnicodeDecodeError:
        variant = None
    weights_fp = reader.take(8, "weights fingerprint")
    table_fp = reader.take(4, "table fingerprint")
    height, width, channels, threads, device_code = reader.unpack("<IIBBB", "image size")
    scale_levels = reader.unpack("<H", "scale-table levels")[0] if version >= 2 else VERSION1_SCALE_LEVELS
    shapes = reader.unpack("<6H", "latent shapes")
    digest = reader.take(8, "symbol digest")
    (n_streams,) = reader.unpack("<B", "stream count")
    if not 0 < n_streams <= _MAX_STREAMS:
        raise S2LFormatError(f"the file is corrupted (it declares {n_streams} streams)")
    lengths = reader.unpack(f"<{n_streams}I", "stream lengths")
    payload = sum(lengths)
    remaining = reader.end - reader.pos
    if payload > remaining:
        raise S2LFormatError(
            f"the file is truncated: its streams need {payload} bytes and only {max(remaining, 0)} are there"
        )
    (stored_crc,) = struct.unpack("<I", data[-_CHECKSUM_SIZE:])
    if zlib.crc32(data[:-_CHECKSUM_SIZE]) != stored_crc:
        if payload < remaining:
            raise S2LFormatError(
                f"the file has {remaining - payload} unexpected bytes (not one complete .s2l file)"
            )
        raise S2LFormatError("the file is corrupted (checksum mismatch)")
    if payload != remaining:
        raise S2LFormatError(f"the file has {remaining - payload} unexpected bytes after its streams")
    if variant is None:
        raise S2LFormatError("the file is corrupted (its model name is not UTF-8)")
    if channels not in (1, 3) or threads < 1 or height < 1 or width < 1 or device_code >= len(DEVICE_KINDS):
        raise S2LFormatError("the file is corrupted (impossible image size, channels or thread count)")
    if not 2 <= scale_levels <= _MAX_SCALE_LEVELS:
        raise S2LFormatError(f"the file is corrupted (a scale table of {scale_levels} levels)")
    streams = []
    for length in lengths:
        streams.append(reader.take(length, "streams"))
    header = S2LHeader(
        variant=variant,
        weights_fingerprint=weights_fp,
        table_fingerprint=table_fp,
        height=height,
        width=width,
        channels=channels,
        threads=threads,
        device_kind=DEVICE_KINDS[device_code],
        y_shape=tuple(shapes[:3]),
        z_shape=tuple(shapes[3:]),
        digest=digest,
        scale_levels=scale_levels,
        version=version,
    )
    return header, streams
