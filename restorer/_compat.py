"""Compatibility steps that must run before third-party packages are imported, and the check that
names the optional extra a command needs (:func:`require_extra`).

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

import importlib
import importlib.util
import sys
import types

from restorer.errors import MissingExtraError

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


def require_extra(module: str, extra: str, purpose: str) -> types.ModuleType:
    """Import and return ``module``, or raise :class:`MissingExtraError` naming the pip extra that
    installs it (``restorer[extra]``, see pyproject.toml).

    Only the core dependencies are installed by ``pip install restorer``; basicsr, compressai,
    gradio, pydicom/nibabel, lpips/matplotlib/bm3d and onnx come with extras. Commands call this
    before the work that needs them, so a missing one is a one-line error naming the install command
    (the CLI prints it without a traceback and exits with status 2), not an ImportError halfway
    through. ``purpose`` says what needs it ("restorer train", "S2LIC (the learned codec)").
    """
    if module.split(".")[0] == "basicsr":
        ensure_basicsr_importable()
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None)
        # Installed but broken (one of its own imports fails) reads differently from not installed.
        broken = missing is not None and missing.split(".")[0] != module.split(".")[0]
        state = f"could not be imported ({' '.join(str(exc).split())})" if broken else "is not installed"
        raise MissingExtraError(
            f'{purpose} needs {module}, which {state}: pip install "restorer[{extra}]" '
            f'(in a clone: pip install -e ".[{extra}]")'
        ) from None
