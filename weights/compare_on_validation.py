"""Score weight files on a recipe's own validation sets: the rule that picks what ships.

A new bundled default replaces the shipped one only when it scores higher here, on the held-out
validation photos of the recipe (the corpus split), never on the test sets of ``../shared/data``.
It builds the recipe's validation datasets exactly as training does (same degradation, same seeds)
and reports BasicSR's PSNR with the recipe's ``val.metrics`` settings for each file::

    python weights/compare_on_validation.py options/train/bundled_CRAFT_SRx2_corpus_stage3.yml \\
        restorer/bundled/restorer_CRAFT_SRx2_corpus.safetensors \\
        experiments/bundled_CRAFT_SRx2_corpus_stage3/models/net_g_latest.pth
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _datasets(opt: dict) -> list:
    from restorer.training import compat, register_all

    compat.apply()
    register_all()
    from basicsr.utils.registry import DATASET_REGISTRY

    out = []
    for key, ds in opt["datasets"].items():
        if not key.startswith("val"):
            continue
        ds = dict(ds, phase="val", scale=opt.get("scale", 1))
        out.append((ds["name"], DATASET_REGISTRY.get(ds["type"])(ds)))
    return out


def score(opt: dict, weights: Path) -> dict[str, float]:
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr
    from basicsr.utils import tensor2img

    from restorer import weights as rw
    from restorer.archs import build_network

    net = build_network(dict(opt["network_g"])).eval()
    rw.load_into(net, rw.unwrap_state_dict(rw.read_checkpoint(weights), "params_ema"), source=str(weights))
    metric = dict(next(iter(opt["val"]["metrics"].values())))
    metric.pop("type", None)
    results = {}
    for name, dataset in _datasets(opt):
        scores = []
        for i in range(len(dataset)):
            item = dataset[i]
            with torch.inference_mode():
                out = net(item["lq"][None])
            scores.append(calculate_psnr(tensor2img(out), tensor2img(item["gt"][None]), **metric))
        results[name] = float(np.mean(scores))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("weights", type=Path, nargs="+")
    args = parser.parse_args(argv)
    opt = yaml.safe_load(args.recipe.read_text())
    report = {str(w): score(opt, w) for w in args.weights}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
