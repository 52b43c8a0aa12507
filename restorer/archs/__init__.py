"""Architectures, registered in restorer's own registry (:mod:`restorer.archs.registry`) under their
official type names.

``build_network({'type': 'HAT', **network_g})`` builds a model from an official option file's
``network_g`` mapping unchanged. Registration happens on first use (importing ``restorer.archs`` or
``restorer.archs.layers`` alone stays light), and never imports basicsr: inference does not need
BasicSR's training stack. Training copies these entries into BasicSR's ``ARCH_REGISTRY`` when it
starts (:mod:`restorer.training.archs`).
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

from torch import nn

from restorer.archs.registry import ARCHS, ArchRegistry

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


def register_all() -> ArchRegistry:
    """Import every architecture module (registering it) and return restorer's registry.

    None of them imports basicsr or compressai at module level (S2LIC imports compressai when it is
    built), so this stays cheap enough to run before every build."""
    for name in ARCH_MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return ARCHS


def build_network(opt: dict[str, Any]) -> nn.Module:
    """Build a network from a BasicSR ``network_g`` mapping that includes ``type``."""
    registry = register_all()
    opt = copy.deepcopy(dict(opt))
    arch_type = opt.pop("type")
    return registry.get(arch_type)(**opt)


__all__ = ["ARCH_MODULES", "build_network", "register_all"]
