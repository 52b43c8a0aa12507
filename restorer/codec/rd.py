"""Rate-distortion evaluation of codecs on a folder of images, against JPEG and WebP (Pillow).

For every image: each codec model's real ``.s2l`` size (bytes, bpp over the original pixels), RGB PSNR on
8-bit images and MS-SSIM (``None`` when a side is 160 px or less); JPEG and WebP at a ladder of qualities
(their RD curves); "matched rate" comparisons (the JPEG / WebP PSNR at each codec point's bpp, interpolated
linearly in log-bpp); and the Bjontegaard delta rate (BD-rate) of each codec family vs JPEG.

Typical use::

    results = evaluate_rd(["datasets/skimage_sr/val"], {"s2lic-small-q1": codec1, "s2lic-small-q2": codec2})
    write_rd_reports(results, json_path="rd.json", plot_path="rd.png")

``restorer benchmark --task compress -d DIR [-m s2lic-small] [--plot]`` goes through here.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from restorer.errors import UsageError
from restorer.metrics import MS_SSIM_MIN_SIDE, ms_ssim, psnr_all_channels

__all__ = [
    "JPEG_QUALITIES",
    "MS_SSIM_MIN_SIDE",
    "WEBP_QUALITIES",
    "bd_rate",
    "evaluate_rd",
    "interpolate_at_rate",
    "mean_curve",
    "pillow_curve",
    "pillow_point",
    "plot_rd",
    "rd_markdown",
    "write_rd_reports",
]

JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
WEBP_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
PROTOCOL = (
    "RGB PSNR on 8-bit images; MS-SSIM (pytorch_msssim, 5 scales) on RGB, None below 161 px a side; "
    "bpp = 8 * file bytes / original pixels; JPEG (4:2:0, optimize) and WebP (method 6) from Pillow; "
    "matched-rate values interpolate the anchor curve linearly in log-bpp; BD-rate (Bjontegaard) fits "
    "log-rate as a polynomial of PSNR (cubic; lower degree when the codec has fewer than 4 points) over "
    "the overlapping PSNR range; set-level curves average bpp and PSNR over images per rate point"
)


# ------------------------------------------------------------------------------------------------
# Measurements
# ------------------------------------------------------------------------------------------------


def _quality(original: np.ndarray, decoded: np.ndarray) -> tuple[float, float | None]:
    """RGB PSNR and MS-SSIM (None when a side is below 161 px) of two HxWx3 uint8 images."""
    score = None
    if min(original.shape[:2]) >= MS_SSIM_MIN_SIDE:
        score = float(ms_ssim(original, decoded))
    return psnr_all_channels(decoded, original), score


def pillow_point(image_u8: np.ndarray, fmt: str, quality: int) -> dict[str, Any]:
    """Code an ``H x W x 3`` uint8 image with Pillow (``"JPEG"`` or ``"WEBP"``) at ``quality`` and measure it.

    Returns ``{"quality", "bytes", "bpp", "psnr", "ms_ssim"}``.
    """
    from PIL import Image

    from restorer.codec.api import bits_per_pixel

    buffer = io.BytesIO()
    options = {"optimize": True} if fmt == "JPEG" else {"method": 6}
    Image.fromarray(image_u8).save(buffer, format=fmt, quality=int(quality), **options)
    data = buffer.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    value_psnr, value_ms_ssim = _quality(image_u8, decoded)
    height, width = image_u8.shape[:2]
    return {
        "quality": int(quality),
        "bytes": len(data),
        "bpp": bits_per_pixel(len(data), height, width),
        "psnr": value_psnr,
        "ms_ssim": value_ms_ssim,
    }


def pillow_curve(image_u8: np.ndarray, fmt: str, qualities: Sequence[int]) -> list[dict[str, Any]]:
    """:func:`pillow_point` at each quality, sorted by rate."""
    return sorted((pillow_point(image_u8, fmt, q) for q in qualities), key=lambda p: p["bpp"])


def codec_point(codec, image_u8: np.ndarray) -> dict[str, Any]:
    """One codec's point on an ``H x W x 3`` uint8 image: the real ``.s2l`` size and its quality."""
    from restorer.codec.api import bits_per_pixel, compress_image

    data, reconstruction = compress_image(codec, image_u8, return_reconstruction=True)
    decoded = np.round(np.clip(reconstruction, 0, 1) * 255.0).astype(np.uint8)
    value_psnr, value_ms_ssim = _quality(image_u8, decoded)
    height, width = image_u8.shape[:2]
    return {
        "bytes": len(data),
        "bpp": bits_per_pixel(len(data), height, width),
        "psnr": value_psnr,
        "ms_ssim": value_ms_ssim,
    }


# ------------------------------------------------------------------------------------------------
# Curves: interpolation, averaging, Bjontegaard
# ------------------------------------------------------------------------------------------------


def interpolate_at_rate(curve: Sequence[Mapping[str, Any]], bpp: float, key: str = "psnr") -> float | None:
    """``key`` of ``curve`` (points with ``bpp`` and ``key``) at rate ``bpp``, linear in log-bpp.

    Exact on the curve's own points; ``None`` outside its rate range or when the value is missing.
    """
    points = sorted(
        ((float(p["bpp"]), float(p[key])) for p in curve if p.get(key) is not None and p["bpp"] > 0),
        key=lambda t: t[0],
    )
    if not points or bpp <= 0 or not points[0][0] <= bpp <= points[-1][0]:
        return None
    log_rates = np.log([r for r, _ in points])
    values = np.array([v for _, v in points])
    return float(np.interp(math.log(bpp), log_rates, values))


def mean_curve(curves: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Average equally long curves point by point (the i-th points share a quality setting):
    mean ``bpp``, ``psnr`` and ``ms_ssim`` (None if any image has none)."""
    if not curves:
        return []
    out = []
    for points in zip(*curves, strict=True):
        ms = [p.get("ms_ssim") for p in points]
        out.append(
            {
                "bpp": float(np.mean([p["bpp"] for p in points])),
                "psnr": float(np.mean([p["psnr"] for p in points])),
                "ms_ssim": None if any(v is None for v in ms) else float(np.mean(ms)),
            }
        )
    return out


def bd_rate(anchor: Sequence[tuple[float, float]], test: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Bjontegaard delta rate of ``test`` against ``anchor``, both ``(bpp, psnr)`` points.

    Fits ``log(rate)`` as a polynomial of PSNR for each curve (cubic; a curve with fewer than 4 points gets
    degree ``points - 1``, i.e. a line for 2 points), integrates both over the overlapping PSNR range and
    returns ``exp(mean difference) - 1`` in percent (negative: ``test`` needs fewer bits for the same PSNR).

    Returns ``{"bd_rate_percent", "fit", "psnr_range", "reason"}``; ``bd_rate_percent`` is ``None`` with a
    ``reason`` when a curve has fewer than 2 distinct points or the PSNR ranges do not overlap.
    """

    def clean(points):
        kept = sorted(
            {(float(r), float(p)) for r, p in points if r > 0 and math.isfinite(p)}, key=lambda t: t[1]
        )
        return np.log([r for r, _ in kept]), np.array([p for _, p in kept])

    result: dict[str, Any] = {"bd_rate_percent": None, "fit": None, "psnr_range": None, "reason": None}
    log_a, psnr_a = clean(anchor)
    log_t, psnr_t = clean(test)
    for name, values in (("anchor", psnr_a), ("codec", psnr_t)):
        if len(np.unique(values)) < 2:
            result["reason"] = f"the {name} curve has fewer than 2 distinct points"
            return result
    low, high = max(psnr_a.min(), psnr_t.min()), min(psnr_a.max(), psnr_t.max())
    if high <= low:
        result["reason"] = (
            f"no overlap in PSNR: anchor {psnr_a.min():.2f}-{psnr_a.max():.2f} dB, "
            f"codec {psnr_t.min():.2f}-{psnr_t.max():.2f} dB"
        )
        return result
    deg_a, deg_t = min(3, len(psnr_a) - 1), min(3, len(psnr_t) - 1)
    fit_a = np.polynomial.Polynomial.fit(psnr_a, log_a, deg_a)
    fit_t = np.polynomial.Polynomial.fit(psnr_t, log_t, deg_t)
    int_a, int_t = fit_a.integ(), fit_t.integ()
    mean_diff = ((int_t(high) - int_t(low)) - (int_a(high) - int_a(low))) / (high - low)
    names = {1: "linear", 2: "quadratic", 3: "cubic"}
    result.update(
        bd_rate_percent=float((math.exp(mean_diff) - 1.0) * 100.0),
        fit=f"anchor {names[deg_a]}, codec {names[deg_t]}",
        psnr_range=[float(low), float(high)],
    )
    if deg_t < 3:
        result["reason"] = f"codec has {len(psnr_t)} points: {names[deg_t]} fit instead of cubic"
    return result


# ------------------------------------------------------------------------------------------------
# A folder of images
# ------------------------------------------------------------------------------------------------


def _family(variant: str) -> tuple[str, int]:
    from restorer.codec.api import _split_quality

    family, quality = _split_quality(variant)
    return family, quality if quality is not None else 0


def _images(folder: Path) -> list[Path]:
    from restorer import io as rio

    if not folder.is_dir():
        raise UsageError(f"Test set folder {folder} does not exist.")
    paths = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in rio.IMAGE_EXTENSIONS]
    if not paths:
        raise UsageError(f"No images in {folder}.")
    return paths


def _set_names(folders: Sequence[Path]) -> list[str]:
    names, seen = [], {}
    for folder in folders:
        base = folder.resolve().name
        seen[base] = seen.get(base, 0) + 1
        names.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return names


def evaluate_rd(
    folders: Sequence[str | os.PathLike],
    codecs: Mapping[str, Any],
    *,
    jpeg_qualities: Sequence[int] = JPEG_QUALITIES,
    webp_qualities: Sequence[int] = WEBP_QUALITIES,
    model_info: Mapping[str, Mapping[str, Any]] | None = None,
    on_image: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """RD evaluation of ``codecs`` (variant name -> :class:`~restorer.codec.api.Codec`) on image folders.

    Returns (JSON-ready)::

        {"task": "compress", "kind": "codec", "protocol",
         "test_sets": {set: {"path", "images": {stem: {"size": "WxH"}}}},
         "anchors": {"jpeg"|"webp": {set: {"images": {stem: [point...]}, "mean": [point...]}}},
         "models": {variant: {"family", "quality", ...model_info,
                              "datasets": {set: {"bpp", "psnr", "ms_ssim", "jpeg_psnr_at_bpp", ...,
                                                 "images": {stem: {"bytes", "bpp", "psnr", "ms_ssim",
                                                                   "jpeg_psnr_at_bpp", "webp_psnr_at_bpp",
                                                                   "jpeg_ms_ssim_at_bpp"}}}}}},
         "bd_rate_vs_jpeg": {family: {set: {"mean": bd, "images": {stem: bd}}}}}

    where a point is ``{"quality", "bytes", "bpp", "psnr", "ms_ssim"}`` and ``bd`` is :func:`bd_rate`'s dict.
    Set-level numbers average over the set's images.
    """
    from restorer import io as rio
    from restorer.metrics import to_uint8

    if not codecs:
        raise UsageError("No codec model to evaluate.")
    paths = [Path(f) for f in folders]
    if not paths:
        raise UsageError("Give at least one --dataset DIR.")
    results: dict[str, Any] = {
        "task": "compress",
        "kind": "codec",
        "protocol": PROTOCOL,
        "test_sets": {},
        "anchors": {"jpeg": {}, "webp": {}},
        "models": {},
        "bd_rate_vs_jpeg": {},
    }
    info = model_info or {}
    for variant in codecs:
        family, quality = _family(variant)
        results["models"][variant] = {
            "family": family,
            "quality": quality,
            **info.get(variant, {}),
            "datasets": {},
        }
    for set_name, folder in zip(_set_names(paths), paths, strict=True):
        images = {p.stem: to_uint8(rio.to_rgb(rio.read_image(p).pixels)) for p in _images(folder)}
        results["test_sets"][set_name] = {
            "path": str(folder),
            "images": {stem: {"size": f"{im.shape[1]}x{im.shape[0]}"} for stem, im in images.items()},
        }
        for fmt, qualities in (("jpeg", jpeg_qualities), ("webp", webp_qualities)):
            per_image = {stem: pillow_curve(im, fmt.upper(), qualities) for stem, im in images.items()}
            # Average by quality setting, then order by rate, for the set-level curve.
            by_quality = {
                stem: sorted(curve, key=lambda p: p["quality"]) for stem, curve in per_image.items()
            }
            averaged = mean_curve(list(by_quality.values()))
            for point, quality in zip(averaged, sorted(qualities), strict=True):
                point["quality"] = int(quality)
            results["anchors"][fmt][set_name] = {
                "images": per_image,
                "mean": sorted(averaged, key=lambda p: p["bpp"]),
            }
        for variant, codec in codecs.items():
            rows = {}
            for stem, image in images.items():
                if on_image:
                    on_image(f"{variant} {set_name}/{stem}")
                point = codec_point(codec, image)
                for fmt in ("jpeg", "webp"):
                    curve = results["anchors"][fmt][set_name]["images"][stem]
                    point[f"{fmt}_psnr_at_bpp"] = interpolate_at_rate(curve, point["bpp"], "psnr")
                    point[f"{fmt}_ms_ssim_at_bpp"] = interpolate_at_rate(curve, point["bpp"], "ms_ssim")
                rows[stem] = point
            summary = _mean_of(list(rows.values()))
            results["models"][variant]["datasets"][set_name] = {**summary, "images": rows}
        _bd_rates(results, set_name)
    return results


def _mean_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if k != "bytes"]
    out: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in rows]
        out[key] = None if any(v is None for v in values) else float(np.mean(values))
    return out


def _bd_rates(results: dict[str, Any], set_name: str) -> None:
    families: dict[str, list[str]] = {}
    for variant, model in results["models"].items():
        families.setdefault(model["family"], []).append(variant)
    jpeg = results["anchors"]["jpeg"][set_name]
    for family, variants in families.items():
        sets = results["bd_rate_vs_jpeg"].setdefault(family, {})
        datasets = [results["models"][v]["datasets"][set_name] for v in variants]
        entry = {
            "points": variants,
            "mean": bd_rate(_pairs(jpeg["mean"]), [(d["bpp"], d["psnr"]) for d in datasets]),
            "images": {},
        }
        for stem in jpeg["images"]:
            codec_points = [(d["images"][stem]["bpp"], d["images"][stem]["psnr"]) for d in datasets]
            entry["images"][stem] = bd_rate(_pairs(jpeg["images"][stem]), codec_points)
        sets[set_name] = entry


def _pairs(curve: Sequence[Mapping[str, Any]]) -> list[tuple[float, float]]:
    return [(p["bpp"], p["psnr"]) for p in curve]


# ------------------------------------------------------------------------------------------------
# Reports
# ------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rd_markdown(results: Mapping[str, Any]) -> str:
    """Markdown: per set and image, each codec point (bpp, PSNR, MS-SSIM) with JPEG / WebP PSNR at the same
    bpp; then the BD-rate vs JPEG of each codec family (per image and on the set's mean curves)."""
    lines = [f"Protocol: {results['protocol']}.", ""]
    for set_name in results["test_sets"]:
        lines += [
            f"### {set_name}",
            "",
            "| image | model | bpp | PSNR (dB) | MS-SSIM | JPEG PSNR at same bpp | WebP PSNR at same bpp |",
            "|---|---|---|---|---|---|---|",
        ]
        for stem in list(results["test_sets"][set_name]["images"]) + ["**mean**"]:
            for variant, model in results["models"].items():
                data = model["datasets"][set_name]
                row = data if stem == "**mean**" else data["images"][stem]
                lines.append(
                    f"| {stem} | {variant} | {row['bpp']:.3f} | {row['psnr']:.2f} | "
                    f"{_fmt(row['ms_ssim'], 4)} | "
                    f"{_fmt(row['jpeg_psnr_at_bpp'], 2)} | {_fmt(row['webp_psnr_at_bpp'], 2)} |"
                )
        lines += ["", "| BD-rate vs JPEG | " + " | ".join(results["bd_rate_vs_jpeg"]) + " |"]
        lines.append("|---|" + "---|" * len(results["bd_rate_vs_jpeg"]))
        for stem in list(results["test_sets"][set_name]["images"]) + ["mean curve"]:
            cells = []
            for family_sets in results["bd_rate_vs_jpeg"].values():
                entry = family_sets[set_name]
                bd = entry["mean"] if stem == "mean curve" else entry["images"][stem]
                text = "n/a" if bd["bd_rate_percent"] is None else f"{bd['bd_rate_percent']:+.1f} %"
                cells.append(f"{text} ({bd['reason']})" if bd["reason"] else text)
            lines.append(f"| {stem} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_rd(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """PSNR vs bpp (mean over each set's images): JPEG and WebP curves, codec points per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sets = list(results["test_sets"])
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    families: dict[str, list[str]] = {}
    for variant, model in results["models"].items():
        families.setdefault(model["family"], []).append(variant)
    for ax, set_name in zip(axes[0], sets, strict=True):
        for fmt, style in (("jpeg", "o-"), ("webp", "s-")):
            curve = results["anchors"][fmt][set_name]["mean"]
            ax.plot([p["bpp"] for p in curve], [p["psnr"] for p in curve], style, ms=3, label=fmt.upper())
        for family, variants in families.items():
            points = sorted(
                (
                    results["models"][v]["datasets"][set_name]["bpp"],
                    results["models"][v]["datasets"][set_name]["psnr"],
                )
                for v in variants
            )
            bd = results["bd_rate_vs_jpeg"][family][set_name]["mean"]["bd_rate_percent"]
            label = family if bd is None else f"{family} (BD-rate vs JPEG {bd:+.1f} %)"
            ax.plot([p[0] for p in points], [p[1] for p in points], "*-", ms=10, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor log labels overlap
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("RGB PSNR (dB)")
        ax.set_title(f"{set_name} ({len(results['test_sets'][set_name]['images'])} images)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.part.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, target)
    return target


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_rd_reports(
    results: Mapping[str, Any],
    json_path: str | os.PathLike | None = None,
    markdown_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
) -> list[Path]:
    """Write the JSON, the Markdown tables and (when asked) the RD plot; returns the paths written."""
    written = []
    if json_path:
        written.append(_write_text(Path(json_path), json.dumps(results, indent=2) + "\n"))
    if markdown_path:
        written.append(_write_text(Path(markdown_path), rd_markdown(results)))
    if plot_path:
        written.append(plot_rd(results, plot_path))
    return written
