"""Training on BasicSR's own pipeline: our architectures, datasets and model classes registered
in BasicSR's registries, plus the two small compatibility steps that pipeline needs to run on a
CPU and on current PyTorch (see :mod:`restorer.training.compat`)."""

from __future__ import annotations

import importlib

_REGISTERING_MODULES = (
    "restorer.training.data",
    "restorer.training.restoration_data",
    "restorer.training.models",
    "restorer.training.real_sr",
    "restorer.training.compression",
    "restorer.training.reflection",
)


def register_all() -> None:
    """Register architectures, datasets and model classes in BasicSR's registries (idempotent)."""
    from restorer.training.archs import register_in_basicsr

    register_in_basicsr()
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)
