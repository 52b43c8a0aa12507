"""Where does a learned codec lose? The training forward's numbers against the real file's, same images.

For each image and codec it reports three rows, all RGB PSNR on 8-bit output and bits over the original
pixels: ``train`` (the rate-distortion forward in training mode: additive-noise likelihoods,
straight-through rounding in the reconstruction path, i.e. what the loss sees; BatchNorm on its running
statistics, since one image is not a batch), ``eval`` (the same
forward with rounding everywhere: the model's own estimate of the coded stream) and ``coded`` (a real
``.s2l`` file written and decoded by ``restorer.codec``). ``eval`` against ``coded`` differing by more
than rounding (bpp beyond ~1 %, PSNR beyond ~0.05 dB) points at the coding path; ``train`` against
``eval`` measures the noise-vs-rounding gap of the training proxy, which is not a bug.

    python bench/codec_train_vs_coded.py [--model s2lic-small-q1 ...] [--images DIR] [--limit 4]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restorer import io as rio  # noqa: E402
from restorer.codec import api  # noqa: E402
from restorer.metrics import psnr_all_channels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _forward_row(codec: api.Codec, rgb: np.ndarray, train: bool) -> dict[str, float]:
    height, width = rgb.shape[:2]
    x = api._padded_tensor(rgb, codec.device)
    model = codec.model
    model.train(train)
    for module in model.modules():  # ACGC's BatchNorm on pooled features needs a batch; use its running stats
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        with torch.no_grad():
            torch.manual_seed(0)
            out = model(x)
    finally:
        model.eval()
    bits = float(sum(-torch.log2(v).sum().item() for v in out["likelihoods"].values()))
    x_hat = out["x_hat"][0, :, :height, :width].clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    decoded8 = np.round(x_hat * 255).astype(np.uint8)
    original8 = np.round(rgb * 255).astype(np.uint8)
    return {"bpp": bits / (height * width), "psnr": psnr_all_channels(decoded8, original8)}


def compare(codec: api.Codec, rgb: np.ndarray) -> dict[str, dict[str, float]]:
    point = api.rd_point(codec, rgb, with_ms_ssim=False)
    return {
        "train": _forward_row(codec, rgb, train=True),
        "eval": _forward_row(codec, rgb, train=False),
        "coded": {"bpp": point.bpp, "psnr": point.psnr},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["s2lic-small-q1", "s2lic-small-q2"])
    parser.add_argument("--images", type=Path, default=ROOT / "datasets" / "corpus" / "val")
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in rio.IMAGE_EXTENSIONS)[: args.limit]
    report: dict = {"images": [p.name for p in paths], "models": {}}
    for name in args.model:
        codec = api.load_codec(name)
        rows = {p.stem: compare(codec, rio.to_rgb(rio.read_image(p).pixels)) for p in paths}
        mean = {
            kind: {k: float(np.mean([r[kind][k] for r in rows.values()])) for k in ("bpp", "psnr")}
            for kind in ("train", "eval", "coded")
        }
        report["models"][name] = {"mean": mean, "images": rows}
        print(f"{name}: {json.dumps(mean)}", file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
