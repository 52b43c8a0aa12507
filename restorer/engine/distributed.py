"""Several processes, one batch: ``restorer infer --distributed`` and ``restorer benchmark --distributed``.

Started by PyTorch's launcher (``torchrun``, or anything that sets the same variables), each process
(rank) runs on its own device and takes a fixed share of the batch: after the output plan has decided
every name on rank 0, the planned list is dealt out round-robin (rank ``r`` of ``N`` takes items
``r, r+N, ...``), so two ranks never write the same file and a rerun deals the same list the same way.
At the end every rank's report is gathered on rank 0, which prints the one summary; every rank returns
the job's exit status.

The process group is ``gloo`` on CPUs, and ``cpu:gloo,cuda:nccl`` on GPUs: NCCL serves any CUDA tensor
collective, while the only things restorer exchanges (the plan, reports, per-image scores) are small
Python objects, which PyTorch sends over the CPU backend. So no NCCL communicator is ever built and
ranks may even share a GPU (``--device cuda:0``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from restorer.errors import UsageError

__all__ = ["LAUNCH_VARIABLES", "Shard", "SINGLE", "launched", "share", "start"]

T = TypeVar("T")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What ``torchrun`` sets for each process; ``init_process_group('env://')`` needs all of them."""

# Ranks that finish their share early wait for the slowest one at the final gather. PyTorch's
# default (30 minutes for gloo) would abort a long batch whose shares end further apart than that;
# a rank that dies is noticed by torchrun, which stops the others, so a long wait hides no hang.
_TIMEOUT = timedelta(days=7)


def launched(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by a launcher for more than one process."""
    environ = os.environ if environ is None else environ
    try:
        return int(environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def share(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s part of ``items``: every ``world_size``-th item from index ``rank``. Interleaving
    rather than cutting in blocks keeps the parts even when image sizes change along a sorted list."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return list(items[rank::world_size])


@dataclass
class Shard:
    """This process's place in the job. The default is a single process: every method is then the
    identity, so callers need no separate single-process path."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "auto"
    backend: str | None = None
    """The process group's backend; None when no group was started (single process)."""
    _job_order: dict[Any, int] = field(default_factory=dict, repr=False)

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        """``[rank R/N] `` to start this rank's own lines with; empty for a single process."""
        return f"[rank {self.rank}/{self.world_size}] " if self.active else ""

    def from_main(self, make: Callable[[], T]) -> T:
        """``make()`` on rank 0, its result sent to every rank, so all of them work from one plan even
        while another rank is already writing outputs. Where it fails, rank 0 raises the error (and
        prints it); the others leave with its exit status, silently, rather than print it again."""
        if not self.active:
            return make()
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", make())
            except Exception as error:
                dist.broadcast_object_list([("error", getattr(error, "exit_code", 1))], src=0)
                raise
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise SystemExit(value)
        return value

    def part(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (the same list on every rank): see :func:`share`."""
        return share(items, self.rank, self.world_size)

    def take(self, jobs: Sequence[T]) -> list[T]:
        """:meth:`part` of a batch's planned jobs, whose order is kept for :meth:`finish`: it lists
        results as a single process would."""
        self._job_order = {getattr(job, "source", job): index for index, job in enumerate(jobs)}
        return self.part(jobs)

    def finish(self, report: Any, summarize: Callable[[Any], int]) -> int:
        """Gather every rank's report (``written``, ``failed``, ``kept``, ``renamed`` lists) on rank 0,
        which calls ``summarize`` on the merged one; returns its exit status on every rank."""
        if not self.active:
            return summarize(report)
        import torch.distributed as dist

        reports: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(report, reports, dst=0)
        status = [0]
        if self.is_main:
            status[0] = summarize(merge_reports(reports, self._job_order))
            sys.stderr.flush()
        # Also a barrier: no rank exits (and has torchrun stop the others) before rank 0 has printed.
        dist.broadcast_object_list(status, src=0)
        self.close()
        return status[0]

    def merge_scores(self, summary: dict[str, Any], count: int, order: Sequence[str]) -> dict[str, Any]:
        """One benchmark row's summary over all ranks: ``images`` joined in ``order`` (the test set's),
        each metric averaged over them exactly as one process averages, ``sec_per_image`` weighted by
        each rank's ``count`` of images, ``peak_memory_mb`` the largest rank's. Every rank gets it."""
        if not self.active:
            return summary
        import numpy as np
        import torch.distributed as dist

        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, (summary, count))
        found: dict[str, Any] = {}
        for part, _ in parts:
            found.update(part.get("images", {}))
        images = {stem: found[stem] for stem in order if stem in found}
        images.update((stem, scores) for stem, scores in found.items() if stem not in images)
        total = sum(n for _, n in parts)
        merged: dict[str, Any] = {}
        for key in summary:
            if key == "images":
                merged[key] = images
            elif key == "sec_per_image":
                merged[key] = sum(part[key] * n for part, n in parts) / max(total, 1)
            elif key == "peak_memory_mb":
                merged[key] = max(part[key] for part, _ in parts)
            else:  # a metric: np.mean over the images in set order, as evaluate() and score_baseline() do
                values = [scores[key] for scores in images.values()]
                merged[key] = float(np.mean(values)) if values else float("nan")
        return merged

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                # Every rank takes part in close(): without a last barrier a rank that finished its
                # collectives first tore its group down under the others (a C++ abort at exit, seen
                # under load after the benchmark's final all_gather).
                dist.barrier()
                dist.destroy_process_group()
            self.backend = None


SINGLE = Shard()


def merge_reports(reports: Sequence[Any], job_order: Mapping[Any, int]) -> Any:
    """One report from every rank's (rank 0's first). Entries about planned jobs are listed in the
    plan's order; entries decided while planning (only in rank 0's report) come first, as a single
    process lists them."""
    merged = type(reports[0])()
    for report in reports:
        for name in ("written", "failed", "kept", "renamed", "skipped"):
            if hasattr(merged, name):
                getattr(merged, name).extend(getattr(report, name, ()))
    for name in ("failed", "kept", "renamed"):
        if hasattr(merged, name):
            getattr(merged, name).sort(key=lambda entry: job_order.get(entry[0], -1))
    return merged


def _missing_variables() -> list[str]:
    return [name for name in LAUNCH_VARIABLES if not os.environ.get(name)]


def _rank_device(spec: str, local_rank: int) -> str:
    """The device of the process with ``local_rank`` on its machine: ``auto`` and ``cuda`` mean
    ``cuda:LOCAL_RANK`` where CUDA is present (else the CPU); an explicit ``cuda:N`` or ``cpu`` stays."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec not in ("auto", "cuda"):
        return spec
    if not torch.cuda.is_available():
        if spec == "cuda":
            return spec  # resolve_device() says that no GPU is available
        return "cpu"
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise UsageError(
            f"Process LOCAL_RANK={local_rank} has no GPU of its own: this machine has {count}. Start at "
            f"most {count} process(es) per machine (--nproc_per_node), or give --device cpu."
        )
    return f"cuda:{local_rank}"


def start(requested: bool, device: str = "auto", *, command: str = "infer") -> Shard:
    """This process's :class:`Shard`.

    Without ``requested`` (no ``--distributed``) it is the single process, unless a launcher started
    several: then every one of them would do the whole batch and write the same files, which is an
    error. With ``requested`` the launcher's variables must be set (a one-line error says which are
    missing); the process group is started and the rank's device chosen.
    """
    if not requested:
        if launched():
            raise UsageError(
                f"{os.environ['WORLD_SIZE']} processes were started (WORLD_SIZE), but without --distributed "
                f"every one would run the whole batch; add --distributed to `restorer {command}`."
            )
        return Shard(device=device)
    missing = _missing_variables()
    if missing:
        raise UsageError(
            f"--distributed needs a launcher (no {', '.join(missing)} set); run e.g. `torchrun "
            f"--nproc_per_node 2 -m restorer {command} --distributed ...`, or leave --distributed out."
        )
    import torch
    import torch.distributed as dist

    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers.") from None
    rank_device = _rank_device(device, local_rank)
    backend = "gloo"
    if rank_device.startswith("cuda"):
        from restorer.engine.runner import resolve_device

        torch.cuda.set_device(resolve_device(rank_device))
        backend = "cpu:gloo,cuda:nccl"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=_TIMEOUT)
    return Shard(rank, world_size, local_rank, rank_device, backend)
