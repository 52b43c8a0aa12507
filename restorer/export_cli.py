"""``restorer export``: write a model as an ONNX file that ``restorer infer --weights FILE.onnx`` runs.

The model is chosen as ``restorer infer`` chooses it (``--task`` / ``--model`` / ``--weights FILE``, whose
architecture and scale are recognised from the file); see :mod:`restorer.export` for what is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorer.errors import UsageError

FORMATS = ("onnx",)


def register(sub: argparse._SubParsersAction, formatter_class: type[argparse.HelpFormatter]) -> None:
    """Add the ``export`` subcommand to the ``restorer`` parser."""
    from restorer.export import DEFAULT_OPSET, SHAPE_MODES

    export = sub.add_parser(
        "export",
        help="write a model as an ONNX file (runs with: restorer infer --weights FILE.onnx)",
        description="Exports an image-to-image model (HAT, DRCT, CRAFT, DLGSANet, Restore-RWKV, RRFormer) to "
        "ONNX and checks ONNX Runtime against PyTorch on random inputs. The graph takes any image size where "
        "the model's operations allow it, otherwise one tile size, which `restorer infer` then tiles with. "
        'Needs the export extra: pip install -e ".[export]".',
        formatter_class=formatter_class,
    )
    export.add_argument("--task", help="task whose default model is exported (see `restorer models`)")
    export.add_argument("-m", "--model", help="model name, e.g. craft-bundled (with --task or --scale)")
    export.add_argument("--scale", type=int, help="the model's scale when it has several (or give --task)")
    export.add_argument(
        "--weights", help="weight file; without --model its architecture and scale are recognised from it"
    )
    export.add_argument("--format", default="onnx", choices=FORMATS, help="output format")
    export.add_argument("-o", "--output", required=True, help="file to write, e.g. model.onnx")
    export.add_argument(
        "-t",
        "--tile",
        type=int,
        default=None,
        help="traced input size in pixels; the only size a fixed-tile file takes "
        "(default: the model's CPU tile, 256 for most)",
    )
    export.add_argument(
        "--shape",
        default="auto",
        choices=SHAPE_MODES,
        help="auto: any input size where the graph reproduces PyTorch at other sizes, else one tile size; "
        "dynamic: any size or an error; fixed: one tile size",
    )
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    export.add_argument("--overwrite", action="store_true", help="replace the output file if it exists")
    export.set_defaults(func=cmd_export)


def _resolve_entry(args: argparse.Namespace):
    """The zoo entry to export, chosen as `restorer infer` chooses it."""
    from restorer import tasks, zoo
    from restorer import weights as rw

    if args.weights and not args.model:
        from restorer.cli import _detect_weights

        return _detect_weights(args.weights, args.task)
    if args.model:
        if args.task:
            return tasks.resolve(args.task, args.model)
        scales = sorted({e.scale for e in zoo.ZOO.values() if e.model == args.model.lower()})
        if not scales:
            raise UsageError(f"Unknown model '{args.model}'. Models: {', '.join(zoo.model_names())}.")
        scale = args.scale if args.scale is not None else (scales[0] if len(scales) == 1 else None)
        if scale is None:
            raise UsageError(
                f"{args.model} exists at scales {', '.join(map(str, scales))}: give --scale N or --task TASK."
            )
        if scale not in scales:
            raise UsageError(f"{args.model} has no x{scale} variant (scales: {', '.join(map(str, scales))}).")
        return zoo.get_entry(args.model, scale)
    if not args.task:
        raise UsageError("Give --task TASK, --model NAME or --weights FILE (see `restorer models`).")
    return tasks.resolve(args.task, weights_available=rw.is_available)


def cmd_export(args: argparse.Namespace) -> int:
    from restorer.engine.runner import build_restorer
    from restorer.export import DEFAULT_TILE, check_exportable, export_onnx, require_onnx

    require_onnx()  # before any model is loaded: say what to install first
    out = Path(args.output)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--format onnx writes a .onnx file; got -o {out}.")
    if out.exists() and not args.overwrite:
        raise UsageError(f"{out} already exists (--overwrite replaces it).")
    if args.tile is not None and args.tile < 1:
        raise UsageError(f"--tile must be a positive size, got {args.tile}.")
    entry = _resolve_entry(args)
    check_exportable(entry)  # before the weights load: a codec is refused in one line
    restorer = build_restorer(entry, args.weights, device="cpu", precision="fp32", tile=0)
    tile = args.tile or entry.cpu_tile or DEFAULT_TILE
    print(f"Exporting {entry.display_name} x{entry.scale} from {restorer.weights} ...", file=sys.stderr)
    result = export_onnx(
        restorer.model,
        entry,
        out,
        tile=tile,
        shape=args.shape,
        opset=args.opset,
        weights_name=Path(restorer.weights).name if restorer.weights else "",
    )
    info = result.info
    checked = ", ".join(f"{h}x{w}" for h, w in result.checked)
    if info.tile:
        kind = f"fixed {info.tile}x{info.tile} tiles ({result.fixed_reason})"
    else:
        kind = f"any input size (multiples of {info.window_multiple} px, at least {info.min_size})"
        if info.pads_itself:
            kind = f"any input size (at least {info.min_size} px)"
    size_mb = out.stat().st_size / 2**20
    print(f"Wrote {out} ({size_mb:.1f} MiB): {entry.display_name} x{entry.scale}, {kind}.")
    diff = result.max_abs_diff
    print(f"ONNX Runtime vs PyTorch on random inputs ({checked}): max |difference| {diff:.2g}.")
    print(f"Run it with: restorer infer --weights {out} INPUT... -o DIR")
    return 0
