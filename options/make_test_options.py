"""Write options/test/<variant>.yml for every super-resolution zoo entry (BasicSR format), from the zoo alone.

Run: python options/make_test_options.py. tests/test_options.py checks the committed files are
exactly what this writes, so the zoo stays the single source of truth for hyperparameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from restorer import weights as rw
from restorer import zoo

OUT = Path(__file__).resolve().parent / "test"
TEST_SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")
MODEL_TYPES = {"HAT": "HATModel", "DRCT": "DRCTModel", "CRAFT": "CRAFTModel", "DLGSANet": "SRModel"}


def _weights_folder(entry: zoo.ZooEntry) -> str:
    """Shipped files live in the package; official ones go in the clone's weights/."""
    return "restorer/bundled" if rw.is_shipped(entry) else "weights"


def sr_entries() -> list[zoo.ZooEntry]:
    """Entries tested on the SR test sets (Set5 ... Manga109): the SR architectures' variants."""
    return [e for e in zoo.ZOO.values() if e.arch in MODEL_TYPES]


def option_name(entry: zoo.ZooEntry) -> str:
    return Path(entry.weight_file).stem


def test_options(entry: zoo.ZooEntry) -> dict[str, Any]:
    s = entry.scale
    datasets = {
        f"test_{i}": {
            "name": name,
            "type": "PairedImageDataset",
            "dataroot_gt": f"./datasets/{name}/GTmod{s}",
            "dataroot_lq": f"./datasets/{name}/LRbicx{s}",
            "io_backend": {"type": "disk"},
        }
        for i, name in enumerate(TEST_SETS, start=1)
    }
    metric = {"crop_border": s, "test_y_channel": True}
    return {
        "name": option_name(entry),
        "model_type": MODEL_TYPES.get(entry.arch, "SRModel"),
        "scale": s,
        "num_gpu": 1,
        "manual_seed": 0,
        "datasets": datasets,
        "network_g": entry.network_options(),
        "path": {
            "pretrain_network_g": f"./{_weights_folder(entry)}/{entry.weight_file}",
            "strict_load_g": True,
            "param_key_g": entry.param_key,
        },
        "val": {
            "save_img": True,
            "suffix": None,
            "metrics": {
                "psnr": {"type": "calculate_psnr", **metric},
                "ssim": {"type": "calculate_ssim", **metric},
            },
        },
    }


def render(entry: zoo.ZooEntry) -> str:
    header = (
        f"# {entry.display_name} x{entry.scale}: generated from restorer/zoo.py by "
        "options/make_test_options.py; edit the zoo, not this file.\n"
        f"# Weights: {entry.weight_file} from {entry.published}\n"
        f"# Padding: {entry.padding}\n"
        "# Run: restorer test -opt THIS_FILE (num_gpu: 0 or --device cpu for CPU)\n"
    )
    return header + yaml.safe_dump(test_options(entry), sort_keys=False, default_flow_style=None)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for entry in sr_entries():
        (OUT / f"{option_name(entry)}.yml").write_text(render(entry), encoding="utf-8")


if __name__ == "__main__":
    main()
