"""restorer's architectures in BasicSR's ``ARCH_REGISTRY``, for the training pipeline only.

BasicSR's model classes build ``network_g`` through ``basicsr.archs.build_network``, which looks the
``type`` up in its own registry. Inference uses restorer's registry and never imports basicsr, so the
entries are copied across here, when training code starts (:mod:`restorer.training.models` calls
:func:`register_in_basicsr` on import, and every training model module imports that one).
"""

from __future__ import annotations

from typing import Any

from restorer._compat import ensure_basicsr_importable


def register_in_basicsr() -> Any:
    """Copy every restorer architecture into BasicSR's ``ARCH_REGISTRY`` (idempotent); return it.

    A name BasicSR already holds for another class is an error rather than a silent shadow (BasicSR's
    own registry refuses duplicates the same way)."""
    from restorer.archs import register_all

    ensure_basicsr_importable()
    from basicsr.utils.registry import ARCH_REGISTRY

    for name, cls in register_all().items():
        if name in ARCH_REGISTRY:
            if ARCH_REGISTRY.get(name) is not cls:
                raise KeyError(f"BasicSR's ARCH_REGISTRY already holds another {name!r}.")
            continue
        ARCH_REGISTRY.register(cls)
    return ARCH_REGISTRY


__all__ = ["register_in_basicsr"]
