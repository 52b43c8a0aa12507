"""Two functions of basicsr 1.4.2's training pipeline replaced so it runs everywhere we train.

- ``basicsr.utils.options.init_dist`` always uses NCCL and calls ``torch.cuda.set_device``, so
  ``--launcher pytorch`` cannot start on CPUs. Ours picks NCCL on CUDA machines and gloo elsewhere.
- ``basicsr.train.load_resume_state`` maps every tensor with ``storage.cuda(...)`` (fails on a CPU)
  and relies on ``torch.load``'s old unpickling default. Ours maps to the training device and loads
  with ``weights_only=True``, allowing only the ``collections.Counter`` BasicSR's MultiStep
  scheduler stores.

The rest of the pipeline (option parsing, loaders, loop, logging, checkpoints, validation) is
BasicSR's, unmodified. ``apply()`` is idempotent.
"""

from __future__ import annotations

import collections
import os
from os import path as osp

import torch
import torch.distributed as dist

from restorer._compat import ensure_basicsr_importable


def init_dist_any_device(launcher: str, backend: str | None = None, **kwargs) -> None:
    """Initialise the default process group for ``--launcher pytorch`` (torchrun's environment)."""
    if launcher != "pytorch":
        raise ValueError(
            f"Launcher {launcher!r} is not supported here; use --launcher pytorch with torchrun."
        )
    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        backend = backend or "nccl"
    else:
        backend = backend or "gloo"
    dist.init_process_group(backend=backend, **kwargs)


def load_resume_state_any_device(opt: dict):
    """BasicSR's ``load_resume_state`` with device-aware mapping and a weights-only load."""
    from basicsr.utils import check_resume, scandir

    resume_path = None
    if opt.get("auto_resume"):
        state_dir = osp.join("experiments", opt["name"], "training_states")
        if osp.isdir(state_dir):
            states = [
                float(v.split(".state")[0]) for v in scandir(state_dir, suffix="state", recursive=False)
            ]
            if states:
                resume_path = osp.join(state_dir, f"{max(states):.0f}.state")
                opt["path"]["resume_state"] = resume_path
    elif opt["path"].get("resume_state"):
        resume_path = opt["path"]["resume_state"]
    if resume_path is None:
        return None
    location = (
        f"cuda:{torch.cuda.current_device()}"
        if opt.get("num_gpu", 0) and torch.cuda.is_available()
        else "cpu"
    )
    with torch.serialization.safe_globals([collections.Counter]):
        state = torch.load(resume_path, map_location=location, weights_only=True)
    check_resume(opt, state["iter"])
    return state


def apply() -> None:
    ensure_basicsr_importable()
    import basicsr.train
    import basicsr.utils.options

    basicsr.utils.options.init_dist = init_dist_any_device
    basicsr.train.load_resume_state = load_resume_state_any_device
