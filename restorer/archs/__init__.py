"""Architectures, registered in BasicSR's ``ARCH_REGISTRY`` under their official type names.

``build_network({'type': 'HAT', **network_g})`` builds a model from an official option file's
``network_g`` mapping unchanged. Registration happens on first use (importing
``restorer.archs.layers`` alone stays light: no basicsr import).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from torch import nn

# Modules whose import registers architectures. Each later model adds its file here.
ARCH_MODULES = (
    "hat_arch",
    "drct_arch",
    "craft_arch",
    "dlgsanet_arch",
    "restore_rwkv_arch",
    "s2lic_arch",
    "rrformer_arch",
)


def register_all():
    """Import every architecture module (registering it) and return BasicSR's ``ARCH_REGISTRY``."""
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from basicsr.utils.registry import ARCH_REGISTRY

    for name in ARCH_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return ARCH_REGISTRY


def build_network(opt: dict[str, Any]) -> nn.Module:
    """Build a network from a BasicSR ``network_g`` mapping that includes ``type``."""
    registry = register_all()
    opt = copy.deepcopy(dict(opt))
    arch_type = opt.pop("type")
    return registry.get(arch_type)(**opt)


__all__ = ["ARCH_MODULES", "build_network", "register_all"]
