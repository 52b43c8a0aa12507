"""What a checkpoint file is, read from its state dict alone: architecture, variant, scale, task.

Users arrive with renamed ``.pth`` files; like spandrel, restorer recognises them by their key names
and tensor shapes (every zoo variant is built on the meta device and compared exactly, see
:func:`restorer.weights.fitting_variants`), so ``--weights FILE`` needs no ``--model``::

    info = inspect_checkpoint("HAT-S_renamed.pth")
    info.entry.model, info.entry.scale, info.tasks   # 'hat-s', 4, ('sr_x4',)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restorer import zoo
from restorer.errors import CheckpointError, UsageError


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint file and the zoo variants its state dict fits (``entry`` is the preferred one)."""

    path: Path
    entry: zoo.ZooEntry
    fits: tuple[zoo.ZooEntry, ...]
    container_key: str | None  # "params_ema", "params", ... or None for a bare state dict
    module_prefix: bool  # keys carried DataParallel's "module." prefix
    parameters: int
    dtypes: tuple[str, ...]

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for e in self.fits for t in e.tasks))

    def describe(self) -> str:
        """Several lines for ``restorer inspect``."""
        others = sorted({e.model for e in self.fits} - {self.entry.model})
        lines = [
            f"file:          {self.path}",
            f"architecture:  {self.entry.arch}",
            f"variant:       {self.entry.model} ({self.entry.display_name})"
            + (f"; same layout as {', '.join(others)}" if others else ""),
            f"scale:         x{self.entry.scale}",
            f"parameters:    {self.parameters / 1e6:.3f} M",
            f"precision:     {', '.join(self.dtypes)}",
            f"from key:      {self.container_key or '(bare state dict)'}"
            + (" with 'module.' prefixes removed" if self.module_prefix else ""),
            f"task(s):       {', '.join(self.tasks) or '(none)'}",
        ]
        return "\n".join(lines)


def _preference(entry: zoo.ZooEntry) -> tuple[int, int]:
    """Official variants before the bundled ones of the same layout, in each task's preference order."""
    from restorer.tasks import TASKS

    for task in entry.tasks:
        spec = TASKS.get(task)
        if spec is not None and entry.model in spec.models():
            return (spec.models().index(entry.model), 0)
    return (10_000, 0)


def detect_state(state: Mapping[str, Any]) -> list[zoo.ZooEntry]:
    """Zoo entries whose networks have exactly the names and shapes of ``state``, preferred first."""
    from restorer import weights as rw

    fits = rw.fitting_variants(state, zoo.ZOO.values())
    if not fits:  # variants whose key pattern differs from their architecture's first (rrformer-small)
        wanted = {k: tuple(v.shape) for k, v in state.items()}
        fits = [e for e in zoo.ZOO.values() if rw.buildable_signature(e) == wanted]
    return sorted(fits, key=_preference)


def inspect_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Read ``path`` (no code is executed) and say what it is; :class:`CheckpointError` when no zoo
    variant has its layout."""
    from restorer import weights as rw

    path = Path(path)
    state, key, prefixed = rw.unwrap_state_dict_with_source(rw.read_checkpoint(path))
    fits = detect_state(state)
    if not fits:
        sample = ", ".join(sorted(state)[:4])
        # An architecture passed over for a missing extra may be the one: say so, with the command.
        unchecked = "".join(f" Not checked: {message}." for message in rw.missing_extras(zoo.ZOO.values()))
        raise CheckpointError(
            f"{path} does not match any model restorer knows ({len(state)} tensors, e.g. {sample}); "
            f"`restorer weights list` shows the supported architectures and variants.{unchecked}"
        )
    dtypes = tuple(
        sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point()})
    )
    return CheckpointInfo(
        path=path,
        entry=fits[0],
        fits=tuple(fits),
        container_key=key,
        module_prefix=prefixed,
        parameters=sum(v.numel() for v in state.values() if v.is_floating_point()),
        dtypes=dtypes,
    )


def entry_for_task(info: CheckpointInfo, task: str | None) -> zoo.ZooEntry:
    """The fitting variant that serves ``task`` (the preferred fit when ``task`` is None); a one-line
    :class:`UsageError` naming the task the file fits when it serves another scale or job."""
    if task is None:
        return info.entry
    serving = [e for e in info.fits if task in e.tasks]
    if serving:
        return serving[0]
    fitting = ", ".join(f"--task {t}" for t in info.tasks) or "no task"
    raise UsageError(
        f"{info.path.name} is {info.entry.display_name} x{info.entry.scale} ({info.entry.arch}); "
        f"it does not serve --task {task}: use {fitting}."
    )
