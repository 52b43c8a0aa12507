"""``restorer train -opt FILE`` / ``python -m restorer.train -opt FILE``: BasicSR's training pipeline
with restorer's architectures, datasets and model classes registered.

Several GPUs (or CPU processes, over gloo) go through PyTorch's own launcher::

    torchrun --nproc_per_node 2 -m restorer.train -opt options/train/FILE.yml --launcher pytorch

Arguments are BasicSR's: ``-opt``, ``--launcher none|pytorch``, ``--auto_resume``, ``--debug``,
``--force_yml key=value``. Experiments go to ``./experiments/<name>/`` (models with ``params`` and
``params_ema``, training states for resuming, logs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _option_path(argv: Sequence[str]) -> str | None:
    for flag in ("-opt", "--opt"):
        if flag in argv:
            i = list(argv).index(flag)
            return argv[i + 1] if i + 1 < len(argv) else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opt_path = _option_path(argv)
    if not opt_path:
        print(
            "error: give the option file with -opt FILE (BasicSR YAML; see options/train/)", file=sys.stderr
        )
        return 2
    if not Path(opt_path).is_file():
        print(f"error: option file not found: {opt_path}", file=sys.stderr)
        return 2
    from restorer._compat import require_extra
    from restorer.errors import MissingExtraError

    try:  # the [train] extra: BasicSR's pipeline, and the DICOM / NIfTI readers its datasets use
        for module in ("basicsr", "pydicom", "nibabel"):
            require_extra(module, "train", "restorer train")
    except MissingExtraError as exc:  # also reached as `python -m restorer.train`: no traceback
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    from restorer.training import compat, register_all

    compat.apply()
    register_all()
    from basicsr.train import train_pipeline

    saved = sys.argv
    sys.argv = [saved[0] if saved else "restorer-train", *argv]  # BasicSR parses sys.argv itself
    try:
        train_pipeline(os.getcwd())
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
