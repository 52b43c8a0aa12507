"""The ``restorer`` command line.

Every subcommand is a thin shell over the package's calls; user mistakes end with a one-line
``error:`` message (exit status 2 for usage, 1 for failures), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from restorer import __version__
from restorer.errors import RestorerError, UsageError

EXAMPLES = """\
examples:
  restorer infer --task sr_x4 photos/ -o results/        upscale every image in a folder x4
  restorer infer --task sr_x2 --model hat-s a.png b.jpg  choose the model
  restorer infer --task sr_x4 big.tif --tile 256         bound memory with 256 px tiles
  restorer infer --task ct_denoise scans/ -o out/        DICOM series / NIfTI, written back in their format
  restorer models                                        tasks, their models, which weights are present
  restorer weights list                                  every weight file and where it is published
  restorer benchmark --task sr_x4 -d datasets/benchmark_sample   PSNR/SSIM on a test set
  restorer export --task sr_x2 -o sr_x2.onnx             ONNX file; run it with infer --weights sr_x2.onnx
"""


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own usage errors: exit 2 with a hint
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n(run `{self.prog} --help` for details)\n")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:  # float() also takes 'nan' and 'inf'
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _name_suffix(text: str) -> str:
    """An output-name suffix: a plain name part, so outputs always land in the output folder."""
    if any(sep in text for sep in ("/", "\\", os.sep, os.altsep or "/")) or ".." in text or "\0" in text:
        raise argparse.ArgumentTypeError(
            f"must be a plain name part, without '/', '\\' or '..', got {text!r}"
        )
    return text


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _image_tasks() -> list[str]:
    from restorer.tasks import TASKS

    return [name for name, spec in TASKS.items() if spec.kind == "image"]


def _benchmark_tasks() -> list[str]:
    """Tasks `restorer benchmark` scores: the image tasks and the codec ones (rate-distortion)."""
    from restorer.tasks import TASKS

    return [name for name, spec in TASKS.items() if spec.kind in ("image", "codec")]


def _infer_tasks() -> list[str]:
    """Tasks `restorer infer` runs: image-to-image ones and the medical ones (DICOM / NIfTI)."""
    from restorer.tasks import TASKS

    return [name for name, spec in TASKS.items() if spec.kind in ("image", "medical")]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="restorer",
        description="Image restoration and super-resolution (HAT and more) with tiled inference.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"restorer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    infer = sub.add_parser(
        "infer",
        help="restore / upscale image files and folders",
        description="Restore or upscale images. Folders are read non-recursively unless -r is given; "
        "non-image files are skipped. Outputs go to -o DIR, written atomically; inputs are never "
        "overwritten, existing outputs only with --overwrite, and inputs sharing a name get distinct "
        "output names.",
        formatter_class=_DefaultsFormatter,
    )
    infer.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files and/or folders; for medical tasks also DICOM files, DICOM series folders and "
        "NIfTI (.nii, .nii.gz) files (folders are then searched recursively)",
    )
    infer.add_argument(
        "--task",
        choices=_infer_tasks(),
        help="what to do (see `restorer models`); may be left out with --weights FILE, whose model decides",
    )
    infer.add_argument("-o", "--output", default="results", help="output folder")
    infer.add_argument(
        "-m", "--model", help="model name (default: the task's best model with weights present)"
    )
    infer.add_argument(
        "--weights",
        help="weight file (.pth/.pt/.safetensors) instead of the weights folder, or a .onnx file from "
        "`restorer export`",
    )
    infer.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnxruntime"],
        help="auto: onnxruntime for a .onnx --weights file, else torch",
    )
    infer.add_argument(
        "-s", "--outscale", type=_positive_float, help="final scale, resized with Lanczos after the network"
    )
    infer.add_argument(
        "--suffix",
        type=_name_suffix,
        default="out",
        help="added to output names: NAME_SUFFIX.EXT ('' for none)",
    )
    existing = infer.add_mutually_exclusive_group()
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that already exist (default: keep them and skip their inputs, with a note; "
        "the medical tasks still replace theirs)",
    )
    existing.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep outputs that already exist and run only the missing ones, so a rerun finishes an "
        "interrupted batch (the default for image tasks; this states it, and refuses --overwrite)",
    )
    infer.add_argument(
        "--distributed",
        action="store_true",
        help="under torchrun: split the inputs across its processes, one device each; rank 0 prints "
        "the summary of all (torchrun --nproc_per_node N -m restorer.infer ... implies it)",
    )
    infer.add_argument(
        "--ext",
        default="auto",
        choices=["auto", "png", "jpg", "webp", "tif"],
        help="output format; auto keeps the input's format (PNG when alpha or 16-bit would be lost)",
    )
    infer.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    infer.add_argument(
        "-t",
        "--tile",
        type=_nonnegative_int,
        default=None,
        help="tile size in input pixels; 0 = whole image (default: auto)",
    )
    infer.add_argument(
        "--tile-overlap",
        type=_nonnegative_int,
        default=None,
        help="tile overlap in input pixels (default: 2 windows)",
    )
    infer.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    infer.add_argument(
        "--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="compute precision"
    )
    infer.add_argument(
        "--tta",
        action="store_true",
        help="x8 self-ensemble (flips and rotations, averaged): a little better, 8x slower",
    )
    infer.add_argument(
        "--alpha", default="model", choices=["model", "bicubic"], help="how to upscale an alpha channel"
    )
    infer.add_argument(
        "-r", "--recursive", action="store_true", help="also read sub-folders (their structure is kept)"
    )
    infer.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    infer.add_argument(
        "--modality",
        type=str.upper,
        choices=["CT", "MRI", "PET"],
        help="medical tasks: the modality of NIfTI inputs (needed by all_in_one; DICOM states its own)",
    )
    infer.add_argument(
        "--previews",
        choices=["all", "middle", "none"],
        help="medical tasks: PNG previews of every slice, the middle one, or none (default: all)",
    )
    infer.add_argument(
        "--max-voxels",
        type=_nonnegative_int,
        metavar="N",
        help="medical tasks: refuse input volumes of more than N voxels, from their headers "
        "(default: 268435456, e.g. 512 x 512 x 1024; 0 = no limit)",
    )
    infer.set_defaults(func=cmd_infer)

    test = sub.add_parser(
        "test",
        help="run a BasicSR test option file (an official repository's test YAML runs unchanged)",
        description="Restores every dataset of the option file and computes its val.metrics with BasicSR's "
        "functions. Results go to RESULTS/<name>/ (images when val.save_img, and metrics.json).",
    )
    test.add_argument("-opt", "--opt", required=True, help="option file (YAML, BasicSR format)")
    test.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    test.add_argument("--precision", default="fp32", choices=["auto", "fp32", "fp16", "bf16"])
    test.add_argument(
        "-t",
        "--tile",
        type=_nonnegative_int,
        default=None,
        help="tile size (default: the file's tile:, else whole)",
    )
    test.add_argument("--results", default="results", help="results folder")
    test.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    test.set_defaults(func=cmd_test)

    bench = sub.add_parser(
        "benchmark",
        help="PSNR/SSIM (and LPIPS) of models on test sets with the papers' protocol",
        description="Restores every HR image's LR version and scores it the way SR papers do: Y-channel "
        "(BT.601) PSNR/SSIM with crop border = scale on uint8-rounded outputs, BasicSR's functions. "
        "Test sets in BasicSR's (GTmod4/ + LRbicx4/), the HR/ + LR_bicubic/X4/ or a flat HR layout; "
        "missing LR images are made with MATLAB bicubic. Several --model give one table. "
        "Writes OUT/<task>.json and .md.",
        epilog="example: restorer benchmark --task sr_x4 --model hat-s --model craft "
        "--dataset datasets/benchmark_sample --plot",
        formatter_class=_DefaultsFormatter,
    )
    bench.add_argument(
        "--task",
        required=True,
        choices=_benchmark_tasks(),
        help="task (fixes scale and degradation; compress: bpp / PSNR / MS-SSIM against JPEG and WebP, "
        "BD-rate vs JPEG, -m FAMILY for all its rate points)",
    )
    bench.add_argument(
        "-m",
        "--model",
        action="append",
        default=[],
        metavar="NAME[=WEIGHTS]",
        help="model to test, optionally with its weight file; repeat for a comparison "
        "(default: the task's best model with weights present)",
    )
    bench.add_argument("--weights", help="weight file for a single --model")
    bench.add_argument(
        "-d", "--dataset", action="append", required=True, metavar="DIR", help="test set folder; repeatable"
    )
    bench.add_argument("-o", "--out", default="results/benchmark", help="folder for OUT/<task>.json and .md")
    bench.add_argument("--json", help="JSON results file (default: OUT/<task>.json)")
    bench.add_argument("--markdown", help="Markdown table file (default: OUT/<task>.md)")
    bench.add_argument(
        "--plot",
        nargs="?",
        const="",
        default=None,
        metavar="PNG",
        help="bar chart; RD curves for --task compress (default file: OUT/<task>.png)",
    )
    bench.add_argument(
        "--save-images", metavar="DIR", help="also save outputs as DIR/<model>/<set>/<name>.png"
    )
    bench.add_argument("--rgb", action="store_true", help="also PSNR/SSIM on RGB")
    bench.add_argument(
        "--lpips",
        action="store_true",
        help="also LPIPS (AlexNet; its weights must be in the torch hub cache)",
    )
    bench.add_argument(
        "-t",
        "--tile",
        type=_nonnegative_int,
        default=0,
        help="tile size in LR pixels (default: 0 = whole image, as papers test)",
    )
    bench.add_argument(
        "--tile-overlap", type=_nonnegative_int, default=None, help="tile overlap (default: 2 windows)"
    )
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    bench.add_argument(
        "--precision", default="fp32", choices=["auto", "fp32", "fp16", "bf16"], help="compute precision"
    )
    bench.add_argument(
        "--tta", action="store_true", help="also score each model with the x8 self-ensemble (rows NAME+)"
    )
    bench.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="skip the classical rows (bicubic for super-resolution, BM3D for denoising)",
    )
    bench.add_argument(
        "--distributed",
        action="store_true",
        help="under torchrun: split each test set's images across its processes; rank 0 writes the "
        "reports (torchrun --nproc_per_node N -m restorer benchmark --distributed ...)",
    )
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=cmd_benchmark)

    datasets = sub.add_parser("datasets", help="prepare test sets (write their LR or degraded inputs)")
    dsub = datasets.add_subparsers(
        dest="datasets_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    dprep = dsub.add_parser(
        "prepare",
        help="write the inputs a test set lacks (bicubic LR as uint8 PNG, or a task's: --task)",
        description="Finds each folder's layout (GTmodS/ -> LRbicxS/, HR/ -> LR_bicubic/XS/, flat -> "
        "LR_bicubic/XS/) and writes the missing LR images there, so benchmarks do not remake them.",
    )
    dprep.add_argument("folders", nargs="+", metavar="DIR", help="test set folders")
    dprep.add_argument("-s", "--scale", type=int, action="append", help="downscaling factor; repeatable")
    dprep.add_argument(
        "--task",
        help="write the stored inputs of this task's benchmark instead of bicubic LR "
        "(reflection_removal: synthetic blends in blended/)",
    )
    dprep.add_argument("--overwrite", action="store_true", help="rewrite LR images that already exist")
    dprep.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    dprep.set_defaults(func=cmd_datasets_prepare)

    train = sub.add_parser(
        "train",
        help="train or fine-tune a model from a BasicSR option file (resumable; CPU, GPU, multi-GPU)",
        description="BasicSR's training pipeline with restorer's models. Several processes: "
        "torchrun --nproc_per_node N -m restorer.train -opt FILE --launcher pytorch",
    )
    train.add_argument("-opt", "--opt", required=True, help="option file (YAML; see options/train/)")
    train.add_argument("--launcher", choices=["none", "pytorch"], default="none", help="job launcher")
    train.add_argument("--auto_resume", action="store_true", help="resume from the latest training state")
    train.add_argument("--debug", action="store_true", help="BasicSR debug mode (frequent logs)")
    train.add_argument("--force_yml", nargs="+", default=None, help="override options: key:value ...")
    train.set_defaults(func=cmd_train)

    from restorer.codec.cli import register as register_codec

    register_codec(sub, formatter_class=_DefaultsFormatter)

    from restorer.export_cli import register as register_export

    register_export(sub, formatter_class=_DefaultsFormatter)

    inspect = sub.add_parser(
        "inspect",
        help="say what a weight file is: architecture, variant, scale, task",
        description="Read a checkpoint (.pth/.pt/.safetensors; no code is executed) and print what it is, "
        "recognised from its key names and tensor shapes alone, whatever the file is called.",
    )
    inspect.add_argument("files", nargs="+", metavar="FILE", help="weight files")
    inspect.set_defaults(func=cmd_inspect)

    models = sub.add_parser("models", help="list tasks, their models and which weights are present")
    models.set_defaults(func=cmd_models)

    weights = sub.add_parser("weights", help="list, download or create weight files")
    wsub = weights.add_subparsers(
        dest="weights_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    wlist = wsub.add_parser(
        "list", help="every variant's weight file: present or absent, and where it is published"
    )
    wlist.set_defaults(func=cmd_weights_list)
    wdown = wsub.add_parser(
        "download",
        help="download a model's official weights, or a file models need (vgg19); needs a network",
        description="Downloads into the project's weights/ folder (or --dir), checks the published hash, "
        "and renames the file into place only when it matches. The only command that uses the network.",
    )
    wdown.add_argument(
        "model", help="model name, e.g. hat-s; or vgg19 (torchvision's ImageNet VGG19, which RRFormer needs)"
    )
    wdown.add_argument("--scale", type=int, help="one scale only (default: every scale)")
    wdown.add_argument("--dir", help="destination folder (default: the project's weights/)")
    wdown.set_defaults(func=cmd_weights_download)
    winit = wsub.add_parser(
        "init",
        help="write a randomly initialised checkpoint (official format) for testing pipelines",
        description="Writes {'params_ema': state_dict} of a freshly initialised network. Its outputs are "
        "meaningless: it exists to test installs and pipelines without real weights.",
    )
    winit.add_argument("model", help="model name, e.g. hat-s")
    winit.add_argument("--scale", type=int, required=True)
    winit.add_argument("-o", "--output", required=True, help="file to write (.pth or .safetensors)")
    winit.add_argument("--seed", type=int, default=0)
    winit.set_defaults(func=cmd_weights_init)
    return parser


def _entry(model: str, scale: int):
    from restorer import zoo

    try:
        return zoo.get_entry(model, scale)
    except KeyError:
        scales = sorted(e.scale for e in zoo.ZOO.values() if e.model == model.lower())
        if not scales:
            raise UsageError(f"Unknown model '{model}'. Models: {', '.join(zoo.model_names())}.") from None
        raise UsageError(
            f"{model} has no x{scale} variant (scales: {', '.join(map(str, scales))})."
        ) from None


def cmd_infer(args: argparse.Namespace) -> int:
    from restorer import tasks
    from restorer import weights as rw
    from restorer.engine.distributed import start as start_shard
    from restorer.engine.runner import Report, build_restorer, plan_jobs, process_files

    out_dir = Path(args.output)
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        raise UsageError(f"No such file or folder: {', '.join(missing)}")
    onnx_entry = _onnx_entry(args)  # an exported file describes itself: scale, channels, tile, task
    if onnx_entry is not None:
        args.task = args.task or onnx_entry.tasks[0]
    elif args.weights and not args.model:
        detected = _detect_weights(args.weights, args.task)
        args.task, args.model = args.task or detected.tasks[0], detected.model
    if not args.task:
        raise UsageError(
            "Give --task TASK (see `restorer models`), or --weights FILE to let the file decide."
        )
    if tasks.get_task(args.task).kind == "medical":
        if onnx_entry is not None:
            raise UsageError("ONNX files run image tasks; medical tasks run with the torch backend.")
        if args.distributed or args.skip_existing:  # the medical runner has no output plan to share or skip
            raise UsageError("--distributed and --skip-existing are for image tasks, not medical ones.")
        return _infer_medical(args, out_dir)
    if args.modality or args.previews or args.max_voxels is not None:
        raise UsageError(
            "--modality, --previews and --max-voxels are for the medical tasks (DICOM / NIfTI inputs)."
        )
    entry = onnx_entry or tasks.resolve(
        args.task, args.model, weights_available=None if args.weights else rw.is_available
    )
    shard = start_shard(args.distributed, args.device)
    args.device = shard.device
    plan = shard.from_main(
        lambda: plan_jobs(
            args.inputs,
            out_dir,
            recursive=args.recursive,
            suffix=args.suffix,
            ext=args.ext,
            overwrite=args.overwrite,
        )
    )
    if shard.is_main:  # every rank holds the same plan: its notes are said once
        for path in plan.skipped:
            print(f"note: skipping {path} (not an image file)", file=sys.stderr)
        plan.print_notes()
    if not plan.outputs and not plan.existing and not plan.failed:
        raise UsageError(f"No image files found in {', '.join(args.inputs)}.")
    report = Report(failed=list(plan.failed), kept=list(plan.existing)) if shard.is_main else Report()
    plan.outputs = shard.take(plan.outputs)
    if not plan.outputs:  # nothing left to run: no model is loaded
        return shard.finish(report, lambda merged: _finish_report(merged, out_dir, "image(s)"))
    backend_options = (args.device, args.precision, args.tile, args.tile_overlap)
    on_message = lambda m: print(f"note: {m}", file=sys.stderr)  # noqa: E731
    if onnx_entry is None:
        restorer = build_restorer(entry, args.weights, *backend_options, on_message=on_message, tta=args.tta)
    else:  # the file describes its own model
        from restorer.engine.onnx_runner import build_onnx_restorer

        restorer = build_onnx_restorer(args.weights, *backend_options, on_message=on_message, tta=args.tta)
    if not args.quiet:
        print(
            f"{shard.label}{entry.display_name} x{entry.scale} on {restorer.device} "
            f"({str(restorer.dtype).replace('torch.', '')}), "
            f"{len(plan.outputs)} image(s) -> {out_dir}/",
            file=sys.stderr,
        )
    done = process_files(
        restorer,
        plan.outputs,
        suffix=args.suffix,
        ext=args.ext,
        alpha_mode=args.alpha,
        outscale=args.outscale,
        progress=not args.quiet and shard.is_main,  # one progress bar: ranks' bars would overwrite each other
        quality=args.quality,
        protect=plan.inputs,
        overwrite=args.overwrite,
    )
    report.written += done.written
    report.failed += done.failed
    report.kept += done.kept
    report.renamed += done.renamed
    return shard.finish(report, lambda merged: _finish_report(merged, out_dir, "image(s)"))


def _onnx_entry(args: argparse.Namespace):
    """The entry an ONNX --weights file describes (None for the torch backend), said in one line."""
    from restorer.engine.onnx_runner import onnx_entry_for_task, resolve_backend

    if resolve_backend(getattr(args, "backend", "auto"), args.weights) != "onnxruntime":
        return None
    if not Path(args.weights).is_file():
        raise UsageError(f"ONNX file not found: {args.weights}")
    entry = onnx_entry_for_task(args.weights, args.task)
    if args.model and args.model.lower() != entry.model:
        raise UsageError(f"{Path(args.weights).name} holds {entry.model}, not {args.model}; drop --model.")
    print(f"note: {Path(args.weights).name} is {entry.display_name} x{entry.scale} (ONNX)", file=sys.stderr)
    return entry


def _detect_weights(path: str, task: str | None):
    """The zoo entry a weight file fits (for ``task`` when given), said in one line on stderr."""
    from restorer.detect import entry_for_task, inspect_checkpoint

    if not Path(path).is_file():
        raise UsageError(f"Weight file not found: {path}")
    info = inspect_checkpoint(path)
    entry = entry_for_task(info, task)
    print(
        f"note: {Path(path).name} is {entry.display_name} x{entry.scale} (--model {entry.model})",
        file=sys.stderr,
    )
    return entry


def cmd_inspect(args: argparse.Namespace) -> int:
    from restorer.detect import inspect_checkpoint
    from restorer.errors import RestorerError

    failed = 0
    for index, path in enumerate(args.files):
        if index:
            print()
        try:
            if not Path(path).is_file():
                raise UsageError(f"Weight file not found: {path}")
            print(inspect_checkpoint(path).describe())
        except RestorerError as error:
            print(f"error: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def _finish_report(report, out_dir: Path, noun: str) -> int:
    """Print what was written, renamed, kept and what failed; exit status 1 when anything failed."""
    from restorer.engine.output_plan import print_summary

    return print_summary(
        out_dir,
        noun,
        len(report.written),
        report.failed,
        getattr(report, "kept", ()),
        getattr(report, "renamed", ()),
    )


def _infer_medical(args: argparse.Namespace, out_dir: Path) -> int:
    """`restorer infer` for a medical task: DICOM / NIfTI volumes slice by slice, plain images as gray."""
    from restorer import tasks
    from restorer import weights as rw
    from restorer._compat import require_extra

    for module in ("pydicom", "nibabel"):  # the medical runner reads DICOM and NIfTI: the [medical] extra
        require_extra(module, "medical", f"--task {args.task}")
    from restorer.engine.medical_runner import check_modality, plan_medical_jobs, process_medical_files
    from restorer.engine.runner import Report, build_restorer

    if args.outscale:
        raise UsageError("--outscale is for image tasks; a medical task's output scale is fixed.")
    plan = plan_medical_jobs(args.inputs, out_dir)
    for path in plan.skipped:
        print(f"note: skipping {path} (not an image, DICOM or NIfTI file)", file=sys.stderr)
    if not plan.jobs and not plan.failed:
        raise UsageError(f"No DICOM, NIfTI or image files found in {', '.join(args.inputs)}.")
    check_modality(args.task, plan, args.modality)
    report = Report(failed=list(plan.failed))  # nothing to run: only the files that could not be read
    if plan.jobs:
        entry = tasks.resolve(
            args.task, args.model, weights_available=None if args.weights else rw.is_available
        )
        restorer = build_restorer(
            entry,
            args.weights,
            args.device,
            args.precision,
            args.tile,
            args.tile_overlap,
            on_message=lambda m: print(f"note: {m}", file=sys.stderr),
        )
        if not args.quiet:
            print(
                f"{entry.display_name} ({args.task}) on {restorer.device} "
                f"({str(restorer.dtype).replace('torch.', '')}), {len(plan.jobs)} input(s) -> {out_dir}/",
                file=sys.stderr,
            )
        report = process_medical_files(
            restorer,
            plan,
            args.task,
            modality=args.modality,
            suffix=args.suffix,
            previews=args.previews or "all",
            ext=args.ext,
            quality=args.quality,
            progress=not args.quiet,
            on_message=lambda m: print(f"note: {m}", file=sys.stderr),
            max_voxels=args.max_voxels,
        )
    return _finish_report(report, out_dir, "result(s)")


def _require_evaluation_extras(verb: str, task: str | None, lpips: bool = False, plot: bool = False) -> None:
    """Check the extras an evaluation verb needs before any model runs (a benchmark can take hours):
    BasicSR's metrics and bicubic for restoration tasks, compressai for the codec, lpips and
    matplotlib when asked for."""
    from restorer import tasks
    from restorer._compat import require_extra

    if task is not None and tasks.get_task(task).kind == "codec":
        require_extra("compressai", "codec", f"--task {task}")
    else:
        require_extra("basicsr", "bench", f"restorer {verb} (BasicSR's metrics and bicubic)")
    if lpips:
        require_extra("lpips", "bench", "--lpips")
    if plot:
        require_extra("matplotlib", "bench", "--plot")


def cmd_test(args: argparse.Namespace) -> int:
    from restorer.benchmark import run_option_file

    _require_evaluation_extras("test", None)
    results = run_option_file(args.opt, args.device, args.precision, args.tile, args.results, not args.quiet)
    print(f"{results['model']} x{results['scale']} ({results['name']})")
    for ds_name, summary in results["datasets"].items():
        scores = "  ".join(f"{k} {v:.4f}" for k, v in summary.items() if k not in ("images", "sec_per_image"))
        print(f"  {ds_name:<12} {scores}  ({summary['sec_per_image']:.2f} s/image)")
    print(f"Results in {Path(args.results) / results['name']}/")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    from restorer.benchmark import ModelRequest, format_table, run_benchmark, write_reports
    from restorer.engine.distributed import start as start_shard

    _require_evaluation_extras("benchmark", args.task, lpips=args.lpips, plot=args.plot is not None)
    requests = [ModelRequest.parse(text) for text in args.model]
    if args.weights:
        if len(requests) > 1:
            raise UsageError("--weights goes with one --model; for several, write --model NAME=WEIGHTS.")
        first = requests[0] if requests else ModelRequest()
        if first.weights:
            raise UsageError("Give the weight file once: --model NAME=WEIGHTS or --weights WEIGHTS.")
        requests = [ModelRequest(first.model, args.weights)]
    shard = start_shard(args.distributed, args.device, command="benchmark")
    results = run_benchmark(
        args.task,
        requests,
        args.dataset,
        device=shard.device,
        precision=args.precision,
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        rgb=args.rgb,
        lpips=args.lpips,
        save_images=args.save_images,
        progress=not args.quiet and shard.is_main,
        # every rank meets the same test sets and models: their notes are said once
        on_message=(lambda m: print(f"note: {m}", file=sys.stderr)) if shard.is_main else (lambda m: None),
        baselines=args.baselines,
        tta=args.tta,
        shard=shard,
    )
    shard.close()
    if not shard.is_main:  # every rank holds the merged results; rank 0 writes them
        return 0
    out = Path(args.out)
    plot_path = None if args.plot is None else (args.plot or out / f"{args.task}.png")
    written = write_reports(
        results,
        json_path=args.json or out / f"{args.task}.json",
        markdown_path=args.markdown or out / f"{args.task}.md",
        plot_path=plot_path,
    )
    print(format_table(results))
    print(f"Wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def cmd_datasets_prepare(args: argparse.Namespace) -> int:
    from restorer import tasks
    from restorer.benchmark import BICUBIC, degradation_for, prepare

    _require_evaluation_extras("datasets prepare", None)
    if args.task:
        spec = tasks.get_task(args.task)
        degradation = degradation_for(spec)
        if args.scale and args.scale != [spec.scale]:
            raise UsageError(f"--task {spec.name} is x{spec.scale}; drop --scale.")
        scales = [spec.scale]
    else:
        degradation = BICUBIC
        if not args.scale:
            raise UsageError("Give --scale S (repeatable) for bicubic LR images, or --task TASK.")
        for scale in args.scale:
            if scale < 2:
                raise UsageError(f"--scale must be 2 or more, got {scale}.")
        scales = args.scale
    missing = [f for f in args.folders if not Path(f).is_dir()]
    if missing:
        raise UsageError(f"Dataset folder not found: {', '.join(missing)}")
    for folder in args.folders:
        for scale in scales:
            test_set, written = prepare(
                folder, scale, degradation, overwrite=args.overwrite, progress=not args.quiet
            )
            kept = len(test_set.pairs) - len(written)
            print(
                f"{test_set.name} x{scale} ({test_set.layout}): wrote {len(written)} input image(s) to "
                f"{test_set.lr_dir}/" + (f", kept {kept} existing" if kept else "")
            )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from restorer.train import main as train_main

    argv = ["-opt", args.opt, "--launcher", args.launcher]
    argv += ["--auto_resume"] if args.auto_resume else []
    argv += ["--debug"] if args.debug else []
    argv += ["--force_yml", *args.force_yml] if args.force_yml else []
    return train_main(argv)


def cmd_models(args: argparse.Namespace) -> int:
    from restorer import weights as rw
    from restorer.tasks import TASKS, resolve

    for spec in TASKS.values():
        default = resolve(spec.name, weights_available=rw.is_available)
        print(f"{spec.name}  (x{spec.scale}, {spec.kind}): {spec.description}")
        for name in spec.models():
            entry = spec.entry(name)
            mark = "*" if entry.model == default.model else " "
            state = "weights present" if rw.is_available(entry) else f"absent: {entry.weight_file}"
            print(f"   {mark} {name:<22} {entry.display_name:<28} {state}")
    print("\n* = used when --model is not given. `restorer weights list` says where each file is published.")
    return 0


def cmd_weights_list(args: argparse.Namespace) -> int:
    from restorer import weights as rw
    from restorer import zoo

    print(f"Weight folders searched: {', '.join(str(d) for d in rw.weight_dirs())}")
    for entry in zoo.ZOO.values():
        found = rw.find_weights(entry)
        state = f"present ({found})" if found else "absent"
        print(f"{entry.model:<22} x{entry.scale}  {entry.weight_file:<38} key={entry.param_key:<10} {state}")
    print("\nFiles models need besides their own (`restorer weights download NAME`):")
    for aux in rw.AUXILIARY_WEIGHTS.values():
        found = rw.find_auxiliary(aux.name)
        state = f"present ({found})" if found else "absent"
        print(f"{aux.name:<22}     {aux.file:<38} {aux.size}, for {aux.used_by}; {state}")
    published = dict.fromkeys(e.published for e in zoo.ZOO.values())
    print("\nPublished on:")
    for where in published:
        print(f"  - {where}")
    return 0


def cmd_weights_download(args: argparse.Namespace) -> int:
    from restorer import weights as rw
    from restorer import zoo

    if args.model.lower() in rw.AUXILIARY_WEIGHTS:
        if args.scale is not None:
            raise UsageError(f"{args.model} is not a model with scales; drop --scale.")
        print(f"Saved {rw.download_auxiliary(args.model.lower(), args.dir)}")
        return 0
    targets = [e for e in zoo.ZOO.values() if e.model == args.model.lower()]
    if args.scale is not None:
        targets = [_entry(args.model, args.scale)]
    if not targets:
        raise UsageError(
            f"Unknown model '{args.model}'. Models: {', '.join(zoo.model_names())}; "
            f"other files: {', '.join(rw.AUXILIARY_WEIGHTS)}."
        )
    for entry in targets:
        path = rw.download(entry, args.dir)
        print(f"Saved {path}")
    return 0


def cmd_weights_init(args: argparse.Namespace) -> int:
    import torch

    from restorer.archs import build_network

    entry = _entry(args.model, args.scale)
    torch.manual_seed(args.seed)
    options = entry.network_options()
    if "vgg_weights" in options and not options.get("vgg_in_checkpoint"):
        # A frozen VGG19 kept outside the checkpoint: its values are never written, so none are needed.
        options["vgg_weights"] = "random"
    net = build_network(options)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from restorer import weights as rw

        metadata = {
            "format": "pt",
            "model": entry.model,
            "weights": f"random init, seed {args.seed}, for testing",
        }
        rw.save_safetensors(state, out, metadata)
    else:
        torch.save({entry.param_key: state}, str(out))
    print(
        f"Wrote randomly initialised {entry.display_name} x{entry.scale} weights to {out} (for testing only)"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except RestorerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\nInterrupted; no partial output files were left behind.", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `restorer models | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
