"""The output plan of a batch: every output name is decided before any file is processed.

``restorer infer``, ``compress`` and ``decompress`` turn each input into one output file. Planning the
names of the whole batch first keeps every result, whatever the inputs are called:

* Inputs that would share an output name (``d1/z.png`` and ``d2/z.png``; ``x.png`` and ``x.PNG``;
  ``y.jpg`` and ``y.jpeg``; ``w.png`` and ``w.webp``) get distinct names: the input's extension goes
  into the stem (``y_jpg_out.jpg``, ``y_jpeg_out.jpg``) or, where the extensions do not tell them
  apart, a counter in input order (``z_1_out.png``, ``z_2_out.png``). Names are compared without case
  (two names differing only in case are one file on macOS and Windows) and without the output
  extension, so the names never depend on ``--ext`` or on what a file contains.
* An output that already exists is kept and its input skipped with a note, unless ``overwrite``.
* An output that would replace one of the inputs is never written; that input is reported as failed.
* When ``-o`` lies inside an input folder, files found there that look like this command's outputs
  (named ``*_SUFFIX.EXT``; with no suffix, the output name of another input) are not read as inputs,
  so a second run does not restore the first run's results again.

:func:`gather` expands the command line into :class:`Candidate` inputs; :func:`plan_outputs` turns
them into an :class:`OutputPlan`; :func:`print_summary` prints the end-of-batch summary.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from restorer import io as rio
from restorer.errors import ImageReadError

__all__ = ["Candidate", "OutputPlan", "PlannedOutput", "gather", "plan_outputs", "print_summary"]

_LISTED = 10
"""How many files a summary line lists by name before it only counts the rest."""


@dataclass(frozen=True)
class Candidate:
    """An input file and the folder its output goes to."""

    source: Path
    target_dir: Path
    listed: bool = False
    """Found by listing a folder (True) rather than named on the command line (False)."""


@dataclass
class PlannedOutput:
    """One input and its output: ``target_dir / (name + '.' + ext)``.

    ``name`` is the output file name without extension (``photo_out``); the extension is the
    command's (``s2l``, ``png``) or, for ``infer --ext auto``, decided once the image is read. Without
    a name (``None``) :func:`restorer.io.output_path_for` names the output, as before plans existed.
    """

    source: Path
    target_dir: Path
    name: str | None = None
    renamed: bool = False
    """The name differs from the usual ``STEM_SUFFIX`` because another input has the same one."""

    def target(self, ext: str, suffix: str = "") -> Path:
        if self.name is None:
            return rio.output_path_for(self.source, self.target_dir, suffix, ext)
        return self.target_dir / f"{self.name}.{ext.lstrip('.')}"


@dataclass
class OutputPlan:
    """What a batch will do, decided before any model runs.

    Attributes:
        out_dir: the ``-o`` folder.
        ext: the output extension when the command fixes it, else None (``infer --ext auto``).
        overwrite: whether existing outputs are replaced.
        outputs: the inputs to process, in input order, each with its output name.
        inputs: every input of the batch (never written over).
        skipped: files left out because they are not of the command's kind (set by the caller).
        earlier_outputs: files found in ``-o`` that look like earlier outputs; not read as inputs.
        existing: ``(input, output)`` pairs skipped because the output exists (not ``overwrite``).
        failed: ``(input, message)`` for inputs whose output would replace an input.
        collisions: groups of inputs that would have shared an output name, with their new names.
    """

    out_dir: Path
    ext: str | None
    overwrite: bool
    outputs: list[PlannedOutput] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    earlier_outputs: list[Path] = field(default_factory=list)
    existing: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    collisions: list[list[PlannedOutput]] = field(default_factory=list)

    def notes(self) -> Iterator[str]:
        """One line per thing the user should know before the batch runs (``note: ...``/``error: ...``)."""
        if self.earlier_outputs:
            shown = ", ".join(str(path) for path in self.earlier_outputs[:_LISTED])
            more = len(self.earlier_outputs) - _LISTED
            yield (
                f"note: not reading {len(self.earlier_outputs)} file(s) in the output folder {self.out_dir} "
                f"as inputs: they are named like outputs of an earlier run ({shown}"
                + (f" and {more} more)" if more > 0 else ")")
            )
        for group in self.collisions:
            sources = ", ".join(str(item.source) for item in group)
            names = ", ".join(f"{item.name}.{self._shown_ext(item)}" for item in group)
            yield f"note: {sources} would get the same output name; they are written as {names}"
        for source, target in self.existing:
            yield f"note: skipping {source}: {target} already exists (--overwrite replaces it)"
        for _, message in self.failed:
            yield f"error: {message}"

    def print_notes(self, stream: TextIO | None = None) -> None:
        for line in self.notes():
            print(line, file=stream or sys.stderr)

    def _shown_ext(self, item: PlannedOutput) -> str:
        return self.ext or rio.canonical_ext(item.source.suffix) or "png"


def gather(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    recursive: bool = False,
    mirror: bool = True,
    accept: Callable[[Path], bool] = rio.is_image_file,
    take_named: bool = False,
    unreadable: list[tuple[Path, str]] | None = None,
) -> tuple[list[Candidate], list[Path]]:
    """Expand files and folders into candidates, in the order given, each file once.

    Folders contribute the files ``accept`` takes (natural order; sub-folders too with ``recursive``),
    see :func:`restorer.io.collect_images`. With ``mirror`` a file found in a sub-folder keeps that
    sub-folder under ``out_dir``; without, every output goes straight into ``out_dir``. A file named
    directly is taken when ``accept`` takes it, or always with ``take_named``. Returns ``(candidates,
    skipped)``, ``skipped`` being the files left out. Raises :class:`ImageReadError` for a missing path.
    Folders that cannot be listed go to ``unreadable`` when given (the rest is still gathered).
    """
    out_dir = Path(out_dir)
    candidates: list[Candidate] = []
    skipped: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path, target_dir: Path, listed: bool) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            candidates.append(Candidate(path, target_dir, listed))

    for raw in inputs:
        root = Path(raw)
        if root.is_dir():
            files, ignored = rio.collect_images(
                [root], recursive=recursive, accept=accept, unreadable=unreadable
            )
            skipped += ignored
            for path in files:
                add(path, out_dir / path.parent.relative_to(root) if mirror else out_dir, True)
        elif os.path.lexists(root):
            if take_named or accept(root):
                add(root, out_dir, False)
            else:
                skipped.append(root)
        else:
            raise ImageReadError(f"No such file or folder: {root}")
    return candidates, skipped


def _key(folder: Path, name: str) -> str:
    """Identity of an output name in a folder: real path, case folded, extension left out."""
    return os.path.join(os.path.realpath(folder), name).casefold()


def _stem_name(stem: str, suffix: str) -> str:
    return f"{stem}_{suffix}" if suffix else stem


def _assign_names(
    candidates: Sequence[Candidate], suffix: str
) -> tuple[list[str], list[bool], list[list[int]]]:
    """Output names (no extension) for ``candidates``, all distinct per folder; returns ``(names,
    renamed, groups)`` where ``groups`` lists the indices of inputs that would have shared a name."""
    names = [_stem_name(c.source.stem, suffix) for c in candidates]
    renamed = [False] * len(candidates)
    groups: dict[str, list[int]] = {}
    for index, (candidate, name) in enumerate(zip(candidates, names)):
        groups.setdefault(_key(candidate.target_dir, name), []).append(index)
    used = {key for key, members in groups.items() if len(members) == 1}
    clashes = [members for members in groups.values() if len(members) > 1]
    for members in clashes:
        tags = [candidates[i].source.suffix.lstrip(".").casefold() for i in members]
        if not all(tags) or len(set(tags)) < len(tags):
            tags = [str(number) for number in range(1, len(members) + 1)]
        for index, tag in zip(members, tags):
            candidate = candidates[index]
            stem = f"{candidate.source.stem}_{tag}"
            name, number = _stem_name(stem, suffix), 2
            while _key(candidate.target_dir, name) in used:
                name, number = _stem_name(f"{stem}_{number}", suffix), number + 1
            used.add(_key(candidate.target_dir, name))
            names[index], renamed[index] = name, True
    return names, renamed, clashes


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def plan_outputs(
    candidates: Sequence[Candidate],
    out_dir: str | os.PathLike[str],
    *,
    suffix: str = "",
    ext: str | None = None,
    overwrite: bool = False,
) -> OutputPlan:
    """Decide every output of a batch (see the module's description).

    Args:
        candidates: the inputs, from :func:`gather`.
        out_dir: the ``-o`` folder (every candidate's ``target_dir`` is in it).
        suffix: added to output names, ``STEM_SUFFIX``; empty for none.
        ext: the output extension (``'s2l'``, ``'png'``), or None when it is decided per file (then
            the input's own format is assumed for the checks made here, and the caller checks the real
            name again before writing, as :func:`restorer.engine.runner.process_files` does).
        overwrite: replace outputs that exist instead of skipping their inputs.
    """
    out_dir = Path(out_dir)
    out_root = Path(os.path.realpath(out_dir))
    ext = ext.lstrip(".").lower() if ext else None
    plan = OutputPlan(out_dir=out_dir, ext=ext, overwrite=overwrite)

    def could_be_earlier_output(candidate: Candidate) -> bool:
        if not candidate.listed or not _inside(Path(os.path.realpath(candidate.source.parent)), out_root):
            return False
        own = candidate.source.suffix.lstrip(".").lower()
        if ext:
            return own == ext or rio.canonical_ext(own) == ext
        return rio.canonical_ext(own) is not None

    remaining = list(candidates)
    if suffix:
        tail = f"_{suffix}".casefold()
        earlier = [
            c for c in remaining if could_be_earlier_output(c) and c.source.stem.casefold().endswith(tail)
        ]
        plan.earlier_outputs += [c.source for c in earlier]
        remaining = [c for c in remaining if c not in earlier]
    names, renamed, clashes = _assign_names(remaining, suffix)
    while not suffix:  # no suffix: an earlier output has the name the plan gives another input
        owners: dict[str, set[int]] = {}
        for index, (candidate, name) in enumerate(zip(remaining, names)):
            owners.setdefault(_key(candidate.target_dir, name), set()).add(index)
        drop = {
            index
            for index, candidate in enumerate(remaining)
            if could_be_earlier_output(candidate)
            and owners.get(_key(candidate.source.parent, candidate.source.stem), set()) - {index}
        }
        if not drop:
            break
        plan.earlier_outputs += [remaining[i].source for i in sorted(drop)]
        remaining = [c for i, c in enumerate(remaining) if i not in drop]
        names, renamed, clashes = _assign_names(remaining, suffix)

    plan.inputs = [c.source for c in remaining]
    input_paths = {os.path.realpath(path) for path in plan.inputs}
    input_ids = set()
    for path in plan.inputs:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        input_ids.add((stat.st_dev, stat.st_ino))

    def is_input(target: Path) -> bool:
        if os.path.realpath(target) in input_paths:
            return True
        try:  # hard links, and other spellings of one file on case-insensitive file systems
            stat = os.stat(target)
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) in input_ids

    items = [
        PlannedOutput(c.source, c.target_dir, name, moved)
        for c, name, moved in zip(remaining, names, renamed)
    ]
    plan.collisions = [[items[i] for i in members] for members in clashes]
    for item in items:
        probe_ext = ext or rio.canonical_ext(item.source.suffix)
        target = item.target(probe_ext) if probe_ext else None
        if target is not None and is_input(target):
            plan.failed.append(
                (
                    item.source,
                    f"Refusing to write {target}: it would overwrite the input {item.source}; choose "
                    "another output folder or suffix",
                )
            )
        elif ext and not overwrite and os.path.lexists(target):
            plan.existing.append((item.source, target))
        else:
            plan.outputs.append(item)
    return plan


def print_summary(
    out_dir: str | os.PathLike[str],
    noun: str,
    written: int,
    failed: Sequence[tuple[Path, str]] = (),
    kept: Sequence[tuple[Path, Path]] = (),
    renamed: Sequence[tuple[Path, Path]] = (),
    *,
    failed_noun: str | None = None,
    stream: TextIO | None = None,
) -> int:
    """Print the end of a batch: what was written, renamed, kept and what failed; returns the exit status
    (1 when anything failed, else 0: outputs that exist and were kept are not failures)."""
    stream = stream or sys.stderr
    print(f"Wrote {written} {noun} to {out_dir}/", file=stream)
    if renamed:
        print(f"{len(renamed)} output(s) renamed because inputs shared a name:", file=stream)
        for source, target in renamed:
            print(f"  {source} -> {target}", file=stream)
    if kept:
        print(
            f"{len(kept)} input(s) skipped because their output already exists (--overwrite replaces it):",
            file=stream,
        )
        for source, target in kept[:_LISTED]:
            print(f"  {source}: {target}", file=stream)
        if len(kept) > _LISTED:
            print(f"  ... and {len(kept) - _LISTED} more (each noted above)", file=stream)
    if failed:
        print(f"{len(failed)} {failed_noun or noun} failed:", file=stream)
        for path, message in failed:
            print(f"  {path}: {message}", file=stream)
        return 1
    return 0
