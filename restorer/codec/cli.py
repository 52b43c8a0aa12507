"""``restorer compress`` and ``restorer decompress``: images to ``.s2l`` files and back.

``register(subparsers)`` adds both subcommands to the ``restorer`` parser (see ``restorer/cli.py``).
Like the rest of the CLI: user mistakes raise :class:`~restorer.errors.RestorerError` (printed as one
line, no traceback), a file that fails is reported at the end (exit status 1) while the others are
written, outputs are written atomically and never over an input, and progress shows with tqdm.
Output names are planned first (:mod:`restorer.engine.output_plan`): inputs sharing a name get
distinct outputs, and an existing file is kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from restorer.errors import RestorerError, UsageError

__all__ = ["cmd_compress", "cmd_decompress", "register"]

SUFFIX = ".s2l"

COMPRESS_EXAMPLES = """\
examples:
  restorer compress photo.png -o out/                 -> out/photo.s2l (default model, best quality present)
  restorer compress photos/ -o out/ --quality 1       the lowest rate of the default model
  restorer compress a.png -o out/ -m s2lic-small-q2   one model variant by name
"""

DECOMPRESS_EXAMPLES = """\
examples:
  restorer decompress out/photo.s2l -o restored/      -> restored/photo.png (model named in the file)
  restorer decompress out/ -o restored/               every .s2l file in a folder
"""


def register(subparsers, formatter_class=argparse.ArgumentDefaultsHelpFormatter) -> None:
    """Add ``compress`` and ``decompress`` to ``subparsers`` (from ``parser.add_subparsers``)."""
    compress = subparsers.add_parser(
        "compress",
        help="compress images to .s2l files (S2LIC learned codec)",
        description="Compress images with S2LIC into .s2l files (one per image, DIR/NAME.s2l). Any size; "
        "gray images stay gray; alpha is not coded. Decoding must run on the same kind of device "
        "(CPU or CUDA) as encoding.",
        epilog=COMPRESS_EXAMPLES,
        formatter_class=formatter_class,
    )
    compress.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files and/or folders")
    compress.add_argument("-o", "--output", default="compressed", help="output folder")
    compress.add_argument(
        "-m", "--model", help="model family (s2lic-small) or variant (s2lic-small-q2); default: best present"
    )
    compress.add_argument("--quality", type=int, help="rate point of the family: 1 = fewest bits")
    compress.add_argument("--weights", help="weight file instead of the weights folder")
    compress.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (decode on the same kind)")
    compress.add_argument(
        "--threads", type=int, default=1, help="threads of the entropy model (stored in the file)"
    )
    compress.add_argument(
        "-r", "--recursive", action="store_true", help="also read sub-folders (outputs all go into DIR)"
    )
    compress.add_argument(
        "--overwrite",
        action="store_true",
        help="replace .s2l files that exist (default: keep them, with a note)",
    )
    compress.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-file lines")
    compress.set_defaults(func=cmd_compress)

    decompress = subparsers.add_parser(
        "decompress",
        help="decompress .s2l files to PNG images",
        description="Decode .s2l files into DIR/NAME.png with the model named in each file (its weights must "
        "be present, or given with --weights).",
        epilog=DECOMPRESS_EXAMPLES,
        formatter_class=formatter_class,
    )
    decompress.add_argument("inputs", nargs="+", metavar="FILE", help=".s2l files and/or folders")
    decompress.add_argument("-o", "--output", default="decompressed", help="output folder")
    decompress.add_argument(
        "-m", "--model", help="model variant to decode with (default: the one in the file)"
    )
    decompress.add_argument("--weights", help="weight file instead of the weights folder")
    decompress.add_argument(
        "--device", default="auto", help="auto (the kind recorded in the file), cpu, cuda or cuda:N"
    )
    decompress.add_argument(
        "--overwrite",
        action="store_true",
        help="replace images that exist (default: keep them, e.g. the original photo, with a note)",
    )
    decompress.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-file lines")
    decompress.set_defaults(func=cmd_decompress)


def _device(spec: str):
    from restorer.engine.runner import resolve_device

    return resolve_device(spec)


def _gather(
    inputs: list[str],
    out_dir: Path,
    recursive: bool,
    unreadable: list,
    accept=None,
    take_named: bool = False,
):
    """Candidates for the output plan: files named directly, and the wanted files of folders (folders
    that cannot be listed go to ``unreadable``)."""
    from restorer.engine.output_plan import gather

    missing = [p for p in inputs if not Path(p).exists()]
    if missing:
        raise UsageError(f"No such file or folder: {', '.join(missing)}")
    kwargs = {"accept": accept} if accept is not None else {}
    return gather(
        inputs,
        out_dir,
        recursive=recursive,
        mirror=False,
        take_named=take_named,
        unreadable=unreadable,
        **kwargs,
    )


def _progress(items, quiet: bool, unit: str):
    from tqdm import tqdm

    return tqdm(items, unit=unit, disable=quiet or len(items) < 2, file=sys.stderr)


def _report(
    failed: list[tuple[Path, str]],
    written: int,
    what: str,
    out_dir: Path,
    kept: list[tuple[Path, Path]] = (),
    renamed: list[tuple[Path, Path]] = (),
) -> int:
    from restorer.engine.output_plan import print_summary

    return print_summary(out_dir, what, written, failed, kept, renamed, failed_noun="file(s)")


def _write(target: Path, data: bytes, overwrite: bool) -> None:
    from restorer import io as rio
    from restorer.errors import ImageWriteError

    try:
        rio.write_atomically(target, data, overwrite=overwrite)
    except OSError as exc:
        raise ImageWriteError(f"Cannot write {target}: {exc.strerror or exc}") from exc


def _features(codec) -> int:
    """The width of the model's transforms (S2LIC's ``N``), which sets its memory per pixel."""
    return int(getattr(codec.model, "N", 192))


def cmd_compress(args: argparse.Namespace) -> int:
    from restorer import io as rio
    from restorer.codec.api import bits_per_pixel, compress_image, load_codec
    from restorer.engine.budget import check_codec_job
    from restorer.engine.output_plan import plan_outputs
    from restorer.errors import OutputExistsError, one_line_message

    if args.quality is not None and args.quality < 1:
        raise UsageError(f"--quality must be >= 1, got {args.quality}")
    if not 1 <= args.threads <= 255:
        raise UsageError(f"--threads must be 1..255, got {args.threads}")
    out_dir = Path(args.output)
    unreadable: list[tuple[Path, str]] = []
    images, skipped = _gather(args.inputs, out_dir, args.recursive, unreadable)
    for path in skipped:
        print(f"note: skipping {path} (not an image file)", file=sys.stderr)
    if not images and not unreadable:
        raise UsageError(f"No image files found in {', '.join(args.inputs)}.")
    plan = plan_outputs(images, out_dir, ext=SUFFIX, overwrite=args.overwrite)
    plan.failed.extend(unreadable)
    plan.print_notes()
    failed = list(plan.failed)
    kept = list(plan.existing)
    renamed: list[tuple[Path, Path]] = []
    written = 0
    if not plan.outputs:  # nothing left to do: no model is loaded
        return _report(failed, written, "file(s)", out_dir, kept)
    codec = load_codec(args.model, args.quality, args.weights, _device(args.device), args.threads)
    if not args.quiet:
        print(
            f"{codec.variant} on {codec.device}: {len(plan.outputs)} image(s) -> {out_dir}/", file=sys.stderr
        )
    features = _features(codec)
    for item in _progress(plan.outputs, args.quiet, "image"):
        path, target = item.source, item.target(SUFFIX)
        try:
            size = rio.probe_size(path)
            if size is not None:  # refused from the header, before decoding what cannot fit
                check_codec_job(path, *size, features)
            image = rio.read_image(path)
            if image.has_alpha:
                print(f"note: {path}: the alpha channel is not coded", file=sys.stderr)
            height, width = image.height, image.width
            data = compress_image(codec, image.pixels)
            del image
            _write(target, data, args.overwrite)
            written += 1
            if item.renamed:
                renamed.append((path, target))
            if not args.quiet:
                bpp = bits_per_pixel(len(data), height, width)
                print(f"{path} -> {target} ({len(data)} bytes, {bpp:.4f} bpp)", file=sys.stderr)
        except OutputExistsError:
            kept.append((path, target))
            print(
                f"note: skipping {path}: {target} already exists (--overwrite replaces it)", file=sys.stderr
            )
        except RestorerError as exc:
            failed.append((path, str(exc)))
        except Exception as exc:  # e.g. MemoryError on a huge image: reported, and the batch goes on
            failed.append((path, one_line_message(exc)))
    return _report(failed, written, "file(s)", out_dir, kept, renamed)


def cmd_decompress(args: argparse.Namespace) -> int:
    from restorer import io as rio
    from restorer.codec.api import decompress_bytes, load_codec, read_header
    from restorer.engine.budget import check_codec_job
    from restorer.engine.output_plan import plan_outputs
    from restorer.errors import OutputExistsError, one_line_message

    out_dir = Path(args.output)
    unreadable = []
    files, skipped = _gather(
        args.inputs,
        out_dir,
        False,
        unreadable,
        accept=lambda path: path.suffix.lower() == SUFFIX,
        take_named=True,
    )
    for path in skipped:
        print(f"note: skipping {path} (not a {SUFFIX} file)", file=sys.stderr)
    if not files and not unreadable:
        raise UsageError(f"No {SUFFIX} files found in {', '.join(args.inputs)}.")
    plan = plan_outputs(files, out_dir, ext="png", overwrite=args.overwrite)
    plan.failed.extend(unreadable)
    plan.print_notes()
    codecs: dict[tuple[str, str], object] = {}
    failed = list(plan.failed)
    kept = list(plan.existing)
    renamed: list[tuple[Path, Path]] = []
    written = 0
    for item in _progress(plan.outputs, args.quiet, "file"):
        path, target = item.source, item.target("png")
        try:
            # A FIFO would block read_bytes() for good and /dev/zero would fill memory: refused unopened
            problem = rio.regular_file_problem(path)
            if problem is not None:
                raise RestorerError(f"cannot read the file: {problem}")
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise RestorerError(f"cannot read the file: {exc.strerror or exc}") from None
            header = read_header(data)
            device = _device(header.device_kind if args.device == "auto" else args.device)
            variant = args.model or header.variant
            key = (variant, str(device))
            if key not in codecs:
                codecs[key] = load_codec(variant, None, args.weights, device)
            # the size the header declares, against the memory free now, before decoding allocates it
            check_codec_job(path, header.height, header.width, _features(codecs[key]), decoding=True)
            pixels = decompress_bytes(codecs[key], data)
            rio.write_image(target, pixels, protect=plan.inputs, overwrite=args.overwrite)
            written += 1
            if item.renamed:
                renamed.append((path, target))
            if not args.quiet:
                print(f"{path} -> {target} ({header.width}x{header.height})", file=sys.stderr)
        except OutputExistsError:
            kept.append((path, target))
            print(
                f"note: skipping {path}: {target} already exists (--overwrite replaces it)", file=sys.stderr
            )
        except RestorerError as exc:
            failed.append((path, str(exc)))
        except Exception as exc:  # e.g. MemoryError: reported, and the batch goes on
            failed.append((path, one_line_message(exc)))
    return _report(failed, written, "image(s)", out_dir, kept, renamed)
