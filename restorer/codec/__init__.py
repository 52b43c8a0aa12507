"""S2LIC image compression: the ``.s2l`` file format and the calls that code images with it.

``restorer.codec.api`` has the calls (also re-exported here), ``restorer.codec.container`` the file
format and ``restorer.codec.cli`` the ``compress`` / ``decompress`` subcommands. Importing this package
is cheap: torch and CompressAI are imported by the calls that need them.
"""

from __future__ import annotations

from restorer.codec.container import MAGIC, S2LFormatError, S2LHeader

__all__ = [
    "MAGIC",
    "Codec",
    "CodecMismatchError",
    "RDPoint",
    "S2LFormatError",
    "S2LHeader",
    "bits_per_pixel",
    "compress_image",
    "decompress_bytes",
    "estimated_bits",
    "load_codec",
    "measure_rd",
    "rd_point",
    "read_header",
    "resolve_codec_entry",
]

_API = {
    "Codec",
    "CodecMismatchError",
    "RDPoint",
    "bits_per_pixel",
    "compress_image",
    "decompress_bytes",
    "estimated_bits",
    "load_codec",
    "measure_rd",
    "rd_point",
    "read_header",
    "resolve_codec_entry",
}


def __getattr__(name: str):
    if name in _API:  # the API module imports torch: load it on first use
        from restorer.codec import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
