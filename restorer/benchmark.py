"""Evaluation runs: BasicSR test option files (``restorer test -opt``) on paired LR/HR folders.

An official repository's test YAML runs unchanged: ``network_g`` builds the network,
``path.pretrain_network_g`` / ``param_key_g`` / ``strict_load_g`` load the weights, every entry of
``datasets`` with ``dataroot_lq`` (and ``dataroot_gt`` when present) is restored, and
``val.metrics`` are computed with BasicSR's functions on uint8-rounded outputs, GT cropped to
LR x scale as BasicSR's ``PairedImageDataset`` does in validation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from restorer import io as rio
from restorer import metrics as rmetrics
from restorer import zoo
from restorer.errors import RestorerError, UsageError


def load_options(path: str | os.PathLike) -> dict[str, Any]:
    """Read a BasicSR option file; a clear error when it is missing or not a YAML mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Option file not found: {path}")
    try:
        opt = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(opt, dict) or "network_g" not in opt:
        raise UsageError(f"{path} is not a BasicSR option file (no network_g section).")
    return opt


def entry_for_network(network_g: dict[str, Any], weight_file: str, param_key: str, name: str) -> zoo.ZooEntry:
    """The zoo entry with exactly this ``network_g`` (for its name and flags), else an ad-hoc one."""
    for entry in zoo.ZOO.values():
        if entry.network_options() == network_g:
            return dataclasses.replace(entry, weight_file=weight_file, param_key=param_key)
    import torch

    from restorer.archs import build_network

    with torch.device("meta"):
        net = build_network(network_g)
    return zoo.ZooEntry(
        model="custom",
        display_name=name,
        arch=network_g["type"],
        scale=int(getattr(net, "scale", network_g.get("upscale", 1))),
        network_g=zoo._freeze(network_g),
        weight_file=weight_file,
        param_key=param_key,
        published="(option file)",
        paper="",
        window_multiple=int(getattr(net, "window_multiple", 1)),
        in_channels=int(network_g.get("in_chans", 3)),
        out_channels=int(network_g.get("in_chans", 3)),
    )


def pair_images(lq_dir: Path, gt_dir: Path | None) -> list[tuple[Path, Path | None]]:
    """LR images of a folder with their GT of the same stem (BasicSR's ``filename_tmpl: '{}'``)."""
    if not lq_dir.is_dir():
        raise UsageError(f"LR folder not found: {lq_dir}")
    lq_images, _ = rio.collect_images([lq_dir])
    if gt_dir is None:
        return [(p, None) for p in lq_images]
    if not gt_dir.is_dir():
        raise UsageError(f"HR (ground-truth) folder not found: {gt_dir}")
    gt_images, _ = rio.collect_images([gt_dir])
    by_stem = {p.stem: p for p in gt_images}
    pairs = []
    for lq in lq_images:
        gt = by_stem.get(lq.stem)
        if gt is None:
            raise UsageError(f"No ground-truth image for {lq.name} in {gt_dir}")
        pairs.append((lq, gt))
    return pairs


def _as_rgb(image: rio.LoadedImage) -> np.ndarray:
    """Colour pixels as 3 channels (BasicSR reads test images with IMREAD_COLOR)."""
    pixels = image.pixels
    return np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels


def run_option_file(
    path: str | os.PathLike,
    device: str = "auto",
    precision: str = "fp32",
    tile: int | None = None,
    results_root: str | os.PathLike = "results",
    progress: bool = True,
) -> dict[str, Any]:
    """Run a BasicSR test option file; returns ``{"name", "model", "datasets": {name: {...}}}``.

    Restored images go to ``results_root/<name>/visualization/<dataset>/`` when ``val.save_img``;
    the metrics table to ``results_root/<name>/metrics.json``.
    """
    from tqdm import tqdm

    from restorer.engine.runner import build_restorer

    opt = load_options(path)
    name = str(opt.get("name") or Path(path).stem)
    network_g = dict(opt["network_g"])
    path_opt = opt.get("path") or {}
    weight_path = path_opt.get("pretrain_network_g")
    if not weight_path:
        raise UsageError(f"{path}: path.pretrain_network_g is not set; it names the weight file to test.")
    param_key = path_opt.get("param_key_g") or "params"
    entry = entry_for_network(network_g, Path(weight_path).name, param_key, name)
    scale = int(opt.get("scale") or entry.scale)
    tile_opt = opt.get("tile") or {}
    if tile is None and tile_opt:
        tile = int(tile_opt.get("tile_size", 0))
    overlap = 2 * int(tile_opt["tile_pad"]) if tile_opt.get("tile_pad") is not None else None
    if device == "auto" and opt.get("num_gpu") == 0:
        device = "cpu"  # the option file's own "CPU mode"
    restorer = build_restorer(entry, weight_path, device, precision, tile if tile is not None else 0, overlap)
    if restorer.scale != scale:
        raise UsageError(f"{path}: scale {scale} does not match the network's upscale {restorer.scale}.")

    val = opt.get("val") or {}
    metric_opts = val.get("metrics") or {}
    save_img = bool(val.get("save_img", False))
    suffix = val.get("suffix") or name
    out_root = Path(results_root) / name
    results: dict[str, Any] = {"name": name, "model": entry.display_name, "scale": scale, "datasets": {}}
    for ds in (opt.get("datasets") or {}).values():
        ds_name = ds.get("name", "dataset")
        pairs = pair_images(
            Path(ds["dataroot_lq"]), Path(ds["dataroot_gt"]) if ds.get("dataroot_gt") else None
        )
        per_image: dict[str, dict[str, float]] = {}
        seconds = 0.0
        for lq_path, gt_path in tqdm(pairs, desc=ds_name, unit="img", disable=not progress):
            lq = rio.read_image(lq_path)
            start = time.perf_counter()
            output = restorer.run_array(_as_rgb(lq))
            seconds += time.perf_counter() - start
            out_u8 = rmetrics.to_uint8(output)
            if save_img:
                target = out_root / "visualization" / ds_name / f"{lq_path.stem}_{suffix}.png"
                rio.write_image(target, out_u8.astype(np.float32) / 255.0, protect=[lq_path])
            if gt_path is None or not metric_opts:
                continue
            gt = rio.read_image(gt_path)
            gt_u8 = rmetrics.to_uint8(_as_rgb(gt))[: out_u8.shape[0], : out_u8.shape[1]]
            if gt_u8.shape != out_u8.shape:
                raise RestorerError(
                    f"{gt_path.name} is {gt_u8.shape[1]}x{gt_u8.shape[0]}, smaller than the output "
                    f"{out_u8.shape[1]}x{out_u8.shape[0]}: LR and GT do not belong together."
                )
            scores = {}
            for metric_name, metric in metric_opts.items():
                fn = rmetrics.METRIC_FUNCTIONS.get(metric.get("type"))
                if fn is None:
                    raise UsageError(f"Unsupported metric type {metric.get('type')!r} in {path}.")
                scores[metric_name] = fn(
                    out_u8,
                    gt_u8,
                    int(metric.get("crop_border", 0)),
                    bool(metric.get("test_y_channel", False)),
                )
            per_image[lq_path.stem] = scores
        summary: dict[str, Any] = {"images": per_image, "sec_per_image": seconds / max(len(pairs), 1)}
        for metric_name in metric_opts:
            if per_image:
                summary[metric_name] = float(np.mean([s[metric_name] for s in per_image.values()]))
        results["datasets"][ds_name] = summary
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "metrics.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results
