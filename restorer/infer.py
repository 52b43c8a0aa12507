"""``python -m restorer.infer ARGS``: ``restorer infer ARGS``, sharded when a launcher started it.

Takes the arguments of ``restorer infer``. Under ``torchrun`` (more than one process) ``--distributed``
is implied, so the launcher line needs nothing else::

    torchrun --nproc_per_node 4 -m restorer.infer --task sr_x4 photos/ -o results/

Started any other way it is a plain single-process ``restorer infer``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from restorer.cli import main as cli_main
    from restorer.engine.distributed import launched

    args = list(sys.argv[1:] if argv is None else argv)
    if launched() and "--distributed" not in args:
        args.insert(0, "--distributed")
    return cli_main(["infer", *args])


if __name__ == "__main__":
    sys.exit(main())
