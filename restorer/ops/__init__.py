"""Plain-PyTorch replacements for the custom CUDA operators of the official repositories."""

from __future__ import annotations

from restorer.ops.dynamic_conv import idynamic_dwconv, idynamic_dwconv_reference

__all__ = ["idynamic_dwconv", "idynamic_dwconv_reference"]
