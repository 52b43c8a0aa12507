"""Peak memory and time of tiled RRFormer inference on the CPU, plus a seam check; prints JSON.

    python bench/bench_rrformer_memory.py                      # 3840x2160, official configuration
    python bench/bench_rrformer_memory.py --size 1024x576 --threads 2
    python bench/bench_rrformer_memory.py --size 7680x4320 --skip-seam
    python bench/bench_rrformer_memory.py --weights RRFormer.pth --vgg weights/vgg19-dcbb9e9d.pth
    python bench/bench_rrformer_memory.py --model rrformer-small   # trained weights, from make_bundled.py

The image (a photo resized to ``--size``) goes through ``run_tiled_with_oom_retry`` (restorer.engine.tiling),
the path ``restorer infer`` takes, with ``--tile`` / ``--overlap`` (defaults: 512 px tiles and the
architecture's recommended overlap). ``peak_rss_gib`` is the process's peak resident memory
(``resource.getrusage``: ``ru_maxrss``) measured right after the tiled run, so it covers loading the
model, the full-size input, output and weight buffers and the largest tile's activations; the seam check
runs afterwards.

``--max-tiles K`` stops after K tiles and says so (``partial``, ``tiles_run``); ``seconds_per_mpx`` is
then extrapolated from the tiles run. Every tile has the same size, so the activations' peak is reached
on the first tiles; the output canvas is allocated at the first tile and normalised in place at the
end. A partial run therefore measures the peak of the full one up to allocator noise: check that on a
size small enough to run fully before trusting it at 8K.

Seam check: a ``--seam-crop`` square crop is restored whole and tiled (tiles of ``--seam-tile`` px with the
same overlap, at least 2 x 2 of them) and the PSNR between the two is reported (target >= 40 dB).

Without ``--weights`` the network is randomly initialised (random VGG19 too, unless ``--vgg``): time and
memory do not depend on weight values, but seams do. A random network's output is nearly constant, so its
last 1x1 convolution is rescaled to give picture-like contrast (std 0.2 around 0.5) before the seam check:
every tile-dependent feature difference then shows at picture scale. Random features reach less far than
trained ones; rerun with trained weights for the definitive number.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from restorer.archs.rrformer_arch import RECOMMENDED_TILE_OVERLAP, RRFormer  # noqa: E402
from restorer.engine.tiling import TileSettings, count_tiles, plan_axis, run_tiled, run_tiled_with_oom_retry  # noqa: E402


class _EnoughTiles(Exception):
    """Raised from the tile callback to end a ``--max-tiles`` run."""


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def current_rss_gib() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**30
    except ImportError:  # /proc fallback (Linux)
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize() / 2**30


def test_image(width: int, height: int) -> torch.Tensor:
    """``(1, 3, H, W)`` float32 in [0, 1]: a photo (astronaut) resized, so tiles see real structure."""
    photo = cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.ascontiguousarray(photo.transpose(2, 0, 1)))[None].float().div_(255.0)


def visible_output_(model: RRFormer, image: torch.Tensor, std: float = 0.2) -> None:
    """Rescale ``deconv3`` so its pre-activation output has ``std`` per channel around 0.5 on ``image``."""
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output) -> None:  # None: a hook's return value would replace the output
        captured["pre"] = output.clone()  # before the in-place ReLU

    hook = model.deconv3.conv2d.register_forward_hook(keep)
    with torch.no_grad():
        model(image)
    hook.remove()
    pre = captured["pre"]
    mean, gain = pre.mean((0, 2, 3)), std / pre.std((0, 2, 3))
    conv = model.deconv3.conv2d
    with torch.no_grad():
        conv.weight.mul_(gain.view(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias - mean) * gain + 0.5)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double().clamp(0, 1) - b.double().clamp(0, 1)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def min_overlap(lengths: tuple[int, ...], tile: int, overlap: int, multiple: int) -> int | None:
    """The smallest overlap between neighbouring tiles the planner actually uses (None: a single tile)."""
    found = []
    for length in lengths:
        spans = plan_axis(-(-length // multiple) * multiple, tile, overlap, multiple)
        found += [s.overlap_after for s in spans[:-1]]
    return min(found, default=None)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="3840x2160", help="WIDTHxHEIGHT of the test image")
    parser.add_argument("--tile", type=int, default=512, help="tile size in input px (multiple of 32)")
    parser.add_argument("--overlap", type=int, default=RECOMMENDED_TILE_OVERLAP, help="tile overlap in px")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--weights", help="RRFormer state dict (strict); default: random weights")
    parser.add_argument("--vgg", default="random", help="VGG19 weights file; default: random")
    parser.add_argument(
        "--config", default="{}", help="JSON of RRFormer arguments (default: the public ones)"
    )
    parser.add_argument(
        "--model",
        help="a zoo model (e.g. rrformer-small): its network options and its weights file, trained "
        "weights for the seam check; replaces --config and --weights",
    )
    parser.add_argument("--seam-crop", type=int, default=384, help="side of the seam-check crop (px)")
    parser.add_argument("--seam-tile", type=int, default=256, help="tile size of the seam check (px)")
    parser.add_argument("--skip-seam", action="store_true", help="only memory and time")
    parser.add_argument(
        "--max-tiles",
        type=int,
        help="stop after this many tiles (a partial run, reported as such: every tile has the same size, "
        "so the peak is reached on the first ones; compare with a full run of a smaller size)",
    )
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.model:
        from restorer import weights as rw
        from restorer import zoo

        entry = zoo.get_entry(args.model, 1)
        options = entry.network_options()
        options.pop("type")
        args.config, args.weights = json.dumps(options), str(rw.require_weights(entry))
        if options.get("vgg_in_checkpoint"):
            args.vgg = "random"  # the checkpoint carries the VGG weights
    model = RRFormer(**{**json.loads(args.config), "vgg_weights": args.vgg})
    if args.weights:
        from restorer.weights import read_checkpoint, unwrap_state_dict

        model.load_state_dict(unwrap_state_dict(read_checkpoint(args.weights)), strict=True)
    model.eval().requires_grad_(False)
    multiple = model.window_multiple
    settings = TileSettings(args.tile, args.overlap)
    image = test_image(width, height)
    rss_ready = current_rss_gib()

    tiles_done = [0]

    def on_tile(done: int, total: int) -> None:
        tiles_done[0] = done
        if args.max_tiles and done >= args.max_tiles and done < total:
            raise _EnoughTiles

    start = time.perf_counter()
    output, used = None, settings
    try:
        output, used = run_tiled_with_oom_retry(
            model, image, 1, multiple, settings, "cpu", torch.float32, on_tile=on_tile
        )
    except _EnoughTiles:
        pass
    seconds = time.perf_counter() - start
    total_tiles = count_tiles(height, width, used, multiple)
    result = {
        "size": [width, height],
        "config": json.loads(args.config) or "public",
        "model": args.model,
        "weights": args.weights or "random",
        "threads": args.threads,
        "tile": used.resolved(multiple)[0],
        "overlap": used.resolved(multiple)[1],
        "min_actual_overlap": min_overlap((height, width), *used.resolved(multiple), multiple),
        "window_multiple": multiple,
        "tiles": total_tiles,
        "tiles_run": tiles_done[0],
        "partial": tiles_done[0] < total_tiles,
        "seconds": round(seconds, 1),
        "seconds_per_mpx": round(seconds / (width * height / 1e6) * total_tiles / max(tiles_done[0], 1), 1),
        "rss_model_and_image_gib": round(rss_ready, 3),
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "output_finite": None if output is None else bool(torch.isfinite(output).all()),
    }
    del output, image

    if not args.skip_seam:
        crop = test_image(args.seam_crop, args.seam_crop)
        if not args.weights:
            visible_output_(model, crop)
        with torch.no_grad():
            whole = model(crop)
        seam_settings = TileSettings(args.seam_tile, args.overlap)
        start = time.perf_counter()
        tiled = run_tiled(model, crop, 1, multiple, seam_settings)
        result["seam"] = {
            "crop": args.seam_crop,
            "tile": seam_settings.resolved(multiple)[0],
            "tiles": count_tiles(args.seam_crop, args.seam_crop, seam_settings, multiple),
            "min_actual_overlap": min_overlap((args.seam_crop,), *seam_settings.resolved(multiple), multiple),
            "psnr_tiled_vs_whole_db": round(psnr(tiled, whole), 2),
            "max_abs_diff": round((tiled - whole).abs().max().item(), 6),
            "output_std": round(whole.std().item(), 3),
            "calibrated_random_output": not args.weights,
            "seconds": round(time.perf_counter() - start, 1),
        }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
