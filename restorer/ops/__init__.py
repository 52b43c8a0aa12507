"""Plain-PyTorch replacements for the custom CUDA operators of the official repositories."""

from __future__ import annotations

from restorer.ops.dynamic_conv import idynamic_dwconv, idynamic_dwconv_reference
from restorer.ops.wkv import bi_wkv, bi_wkv_channels_first, bi_wkv_reference

__all__ = [
    "bi_wkv",
    "bi_wkv_channels_first",
    "bi_wkv_reference",
    "idynamic_dwconv",
    "idynamic_dwconv_reference",
]
