"""``restorer compress`` and ``restorer decompress``: images to ``.s2l`` files and back.

``register(subparsers)`` adds both subcommands to the ``restorer`` parser (see ``restorer/cli.py``).
Like the rest of the CLI: user mistakes raise :class:`~restorer.errors.RestorerError` (printed as one
line, no traceback), a file that fails is reported at the end (exit status 1) while the others are
written, outputs are written atomically and never over an input, and progress shows with tqdm.
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
    compress.add_argument("-r", "--recursive", action="store_true", help="also read sub-folders")
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
    decompress.add_argument("-q", "--quiet", action="store_true", help="no progress bar or per-file lines")
    decompress.set_defaults(func=cmd_decompress)


def _device(spec: str):
    from restorer.engine.runner import resolve_device

    return resolve_device(spec)


def _collect(
    inputs: list[str], suffixes: tuple[str, ...] | None, recursive: bool
) -> tuple[list[Path], list[Path]]:
    """Files named directly are taken as given; folders contribute files with the wanted suffix."""
    from restorer import io as rio

    missing = [p for p in inputs if not Path(p).exists()]
    if missing:
        raise UsageError(f"No such file or folder: {', '.join(missing)}")
    if suffixes is None:
        return rio.collect_images(inputs, recursive=recursive)
    found: list[Path] = []
    skipped: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            pattern = "**/*" if recursive else "*"
            for path in sorted(item.glob(pattern)):
                if path.is_file() and not path.name.startswith("."):
                    (found if path.suffix.lower() in suffixes else skipped).append(path)
        else:
            found.append(item)
    return list(dict.fromkeys(found)), skipped


def _progress(items, quiet: bool, unit: str):
    from tqdm import tqdm

    return tqdm(items, unit=unit, disable=quiet or len(items) < 2, file=sys.stderr)


def _report(failed: list[tuple[Path, str]], written: int, what: str, out_dir: Path) -> int:
    print(f"Wrote {written} {what} to {out_dir}/", file=sys.stderr)
    if failed:
        print(f"{len(failed)} file(s) failed:", file=sys.stderr)
        for path, message in failed:
            print(f"  {path}: {message}", file=sys.stderr)
        return 1
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    from restorer import io as rio
    from restorer.codec.api import bits_per_pixel, compress_image, load_codec

    if args.quality is not None and args.quality < 1:
        raise UsageError(f"--quality must be >= 1, got {args.quality}")
    if not 1 <= args.threads <= 255:
        raise UsageError(f"--threads must be 1..255, got {args.threads}")
    images, skipped = _collect(args.inputs, None, args.recursive)
    for path in skipped:
        print(f"note: skipping {path} (not an image file)", file=sys.stderr)
    if not images:
        raise UsageError(f"No image files found in {', '.join(args.inputs)}.")
    codec = load_codec(args.model, args.quality, args.weights, _device(args.device), args.threads)
    out_dir = Path(args.output)
    if not args.quiet:
        print(f"{codec.variant} on {codec.device}: {len(images)} image(s) -> {out_dir}/", file=sys.stderr)
    failed: list[tuple[Path, str]] = []
    written = 0
    for path in _progress(images, args.quiet, "image"):
        try:
            image = rio.read_image(path)
            if image.has_alpha:
                print(f"note: {path}: the alpha channel is not coded", file=sys.stderr)
            data = compress_image(codec, image.pixels)
            target = out_dir / (path.stem + SUFFIX)
            if target.resolve() == path.resolve():
                raise UsageError(f"refusing to overwrite the input {path}")
            rio.write_atomically(target, data)
            written += 1
            if not args.quiet:
                bpp = bits_per_pixel(len(data), image.height, image.width)
                print(f"{path} -> {target} ({len(data)} bytes, {bpp:.4f} bpp)", file=sys.stderr)
        except RestorerError as exc:
            failed.append((path, str(exc)))
    return _report(failed, written, "file(s)", out_dir)


def cmd_decompress(args: argparse.Namespace) -> int:
    from restorer import io as rio
    from restorer.codec.api import decompress_bytes, load_codec, read_header

    files, skipped = _collect(args.inputs, (SUFFIX,), recursive=False)
    for path in skipped:
        print(f"note: skipping {path} (not a {SUFFIX} file)", file=sys.stderr)
    if not files:
        raise UsageError(f"No {SUFFIX} files found in {', '.join(args.inputs)}.")
    out_dir = Path(args.output)
    codecs: dict[tuple[str, str], object] = {}
    failed: list[tuple[Path, str]] = []
    written = 0
    for path in _progress(files, args.quiet, "file"):
        try:
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
            pixels = decompress_bytes(codecs[key], data)
            target = out_dir / (path.stem + ".png")
            rio.write_image(target, pixels, protect=files)
            written += 1
            if not args.quiet:
                print(f"{path} -> {target} ({header.width}x{header.height})", file=sys.stderr)
        except RestorerError as exc:
            failed.append((path, str(exc)))
    return _report(failed, written, "image(s)", out_dir)
