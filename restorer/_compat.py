"""Compatibility steps that must run before third-party packages are imported.

basicsr 1.4.2 (the newest release on PyPI, 2022) imports
``torchvision.transforms.functional_tensor``, a private module that torchvision removed in 0.17
(BasicSR issue #663, fixed on BasicSR master but never released). Importing basicsr then fails
with ``ModuleNotFoundError`` before any of its registries can be used.

The one function basicsr takes from that module is ``rgb_to_grayscale``, which torchvision still
exports from ``torchvision.transforms.functional`` with the same signature. We register a tiny
alias module under the old name, only when the real one is missing, so basicsr imports unchanged.
Nothing in basicsr is patched, vendored or forked.
"""

from __future__ import annotations

import importlib.util
import sys
import types

_LEGACY_MODULE = "torchvision.transforms.functional_tensor"


def ensure_basicsr_importable() -> None:
    """Make ``import basicsr`` work on torchvision >= 0.17. Idempotent and cheap."""
    if _LEGACY_MODULE in sys.modules:
        return
    try:
        if importlib.util.find_spec(_LEGACY_MODULE) is not None:
            return  # an old torchvision that still ships the module
    except ModuleNotFoundError:
        pass
    from torchvision.transforms import functional

    alias = types.ModuleType(_LEGACY_MODULE)
    alias.__doc__ = "Alias created by restorer._compat for basicsr 1.4.2 (see that module's docstring)."
    alias.rgb_to_grayscale = functional.rgb_to_grayscale
    sys.modules[_LEGACY_MODULE] = alias
