"""Export the bundled S2LIC training runs to ``restorer/bundled/*.safetensors`` and measure their RD
points vs JPEG.

Run from the repository root after the recipes, for example::

    restorer train -opt options/train/bundled_S2LIC_small_q1_cpu.yml
    restorer train -opt options/train/bundled_S2LIC_small_q2_cpu.yml
    python weights/make_bundled_codec.py                  # both rate points, net_g_latest.pth
    python weights/make_bundled_codec.py --quality 1 --checkpoint PATH --out-dir /tmp/try

For each quality it reads the run's weights (``params_ema`` if the run kept an EMA, else ``params``), loads
them strictly into the zoo's ``s2lic-small-q<Q>`` network (the CDF buffers are resized to the checkpoint's
first, as :func:`restorer.codec.api.load_codec` does), refreshes the entropy tables with
``update(force=True)``, writes ``<out-dir>/<weight_file>`` (safetensors, contiguous tensors, the recipe and
iteration in the metadata), reloads it with ``load_codec`` to check it codes with the same weights, and
prints its sha256. Then it prints the RD table of ``weights/README.md`` on the held-out photos (chelsea,
coffee): per image the real ``.s2l`` bpp, RGB PSNR and MS-SSIM of each rate point, JPEG's and WebP's PSNR
at the same bpp, and the BD-rate vs JPEG over the rate points (``restorer.codec.rd``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FAMILY = "s2lic-small"
QUALITIES = (1, 2)


def run_name(quality: int) -> str:
    return f"bundled_S2LIC_small_q{quality}_cpu"


def export(quality: int, checkpoint: Path, out_dir: Path) -> Path:
    """Write one run's weights as the zoo's safetensors file (tables refreshed); returns its path."""
    from restorer import weights as rw
    from restorer import zoo
    from restorer.archs import build_network
    from restorer.codec.api import load_codec, weights_fingerprint

    entry = zoo.get_entry(f"{FAMILY}-q{quality}", 1)
    raw = rw.read_checkpoint(checkpoint)
    key = "params_ema" if isinstance(raw, dict) and "params_ema" in raw else "params"
    state = rw.unwrap_state_dict(raw, key)
    network = build_network(entry.network_options())
    network.resize_entropy_buffers(state)  # a checkpoint saved after update() carries filled CDF tables
    network.load_state_dict(state, strict=True)  # the exported file must load strictly
    network.eval()
    network.update(force=True)  # the tables from these parameters, whatever the checkpoint held
    # Keep each tensor's dtype (the CDF tables are int32); floats as float32.
    tensors = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous().clone()
        for k, v in network.state_dict().items()
    }
    metadata = {
        "format": "pt",
        "model": entry.model,
        "arch": entry.arch,
        "task": "compress",
        "recipe": f"options/train/{run_name(quality)}.yml",
        "iterations": rw.training_iteration(checkpoint),
        "weights": key,
        "entropy_tables": "update(force=True) at export",
    }
    target = rw.save_safetensors(tensors, out_dir / entry.weight_file, metadata)
    reloaded = load_codec(entry.model, weights=str(target))
    if reloaded.fingerprint != weights_fingerprint(network):
        raise SystemExit(f"{target}: reloaded weights differ from the exported ones")
    return target


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", type=int, nargs="+", choices=QUALITIES, default=list(QUALITIES))
    parser.add_argument("--checkpoint", type=Path, help="checkpoint for a single --quality")
    parser.add_argument(
        "--iteration",
        help="use the runs' net_g_<ITERATION>.pth (default: net_g_latest.pth)",
        default="latest",
    )
    parser.add_argument("--out-dir", type=Path, default=ROOT / "restorer" / "bundled")
    parser.add_argument("--val-dir", type=Path, default=ROOT / "datasets" / "skimage_sr" / "val")
    parser.add_argument("--json", type=Path, help="also write the RD results here")
    parser.add_argument("--plot", type=Path, help="also write the RD plot (PNG) here")
    parser.add_argument("--eval-only", action="store_true", help="measure the files already in --out-dir")
    args = parser.parse_args(argv)
    if args.checkpoint and len(args.quality) != 1:
        parser.error("--checkpoint goes with a single --quality")

    from restorer import zoo
    from restorer.codec.api import load_codec
    from restorer.codec.rd import evaluate_rd, plot_rd, rd_markdown

    torch.set_num_threads(1)
    files = {}
    for quality in args.quality:
        variant = f"{FAMILY}-q{quality}"
        if args.eval_only:
            target = args.out_dir / zoo.get_entry(variant, 1).weight_file
        else:
            checkpoint = args.checkpoint or (
                ROOT / "experiments" / run_name(quality) / "models" / f"net_g_{args.iteration}.pth"
            )
            if not checkpoint.is_file():
                print(f"error: no checkpoint {checkpoint} (train {run_name(quality)} first)", file=sys.stderr)
                return 1
            target = export(quality, checkpoint, args.out_dir)
        files[variant] = target
        print(f"{target}  sha256 {sha256(target)}  ({target.stat().st_size} bytes)")

    codecs = {variant: load_codec(variant, weights=str(path)) for variant, path in files.items()}
    results = evaluate_rd(
        [args.val_dir], codecs, model_info={v: {"weights": str(p)} for v, p in files.items()}
    )
    print()
    print(rd_markdown(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    if args.plot:
        plot_rd(results, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
