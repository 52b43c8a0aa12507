"""restorer's own architecture registry: official type name -> network class.

Inference builds networks from here, so running a model never imports basicsr (whose import pulls
its whole training stack). Training still goes through BasicSR's ``ARCH_REGISTRY``: the training
package copies these entries into it when it starts (:mod:`restorer.training.archs`).

The names are the official ones (``HAT``, ``DRCT``, ``Restore_RWKV``, ...), the ``type`` of an
official option file's ``network_g``, so those files build unchanged in both registries.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from torch import nn

ModuleClass = TypeVar("ModuleClass", bound=type[nn.Module])


class ArchRegistry:
    """A name -> class mapping that refuses to register a second class under a taken name."""

    def __init__(self) -> None:
        self._classes: dict[str, type[nn.Module]] = {}

    def register(self, cls: ModuleClass) -> ModuleClass:
        """Register ``cls`` under its class name, which is the official type name (BasicSR keys its
        registry by ``__name__`` too, so the training bridge copies entries one to one). Registering
        the same class again is a no-op; another class under a taken name is an error, as in
        BasicSR, so that one never shadows another silently."""
        existing = self._classes.get(cls.__name__)
        if existing is not None and existing is not cls:
            raise KeyError(f"Architecture {cls.__name__!r} is already registered ({existing.__module__}).")
        self._classes[cls.__name__] = cls
        return cls

    def get(self, name: str) -> type[nn.Module]:
        """The class registered under ``name``; ``KeyError`` naming the known ones otherwise."""
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)) or "none"
            raise KeyError(f"No architecture named {name!r} (registered: {known}).") from None

    def items(self) -> list[tuple[str, type[nn.Module]]]:
        return list(self._classes.items())

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._classes))

    def __len__(self) -> int:
        return len(self._classes)


ARCHS = ArchRegistry()


def register(cls: ModuleClass) -> ModuleClass:
    """Class decorator: register an architecture in :data:`ARCHS` (see :meth:`ArchRegistry.register`)."""
    return ARCHS.register(cls)


def get(name: str) -> type[nn.Module]:
    """The architecture class registered under ``name`` (only those whose modules are imported;
    :func:`restorer.archs.register_all` imports them all)."""
    return ARCHS.get(name)


__all__ = ["ARCHS", "ArchRegistry", "get", "register"]
