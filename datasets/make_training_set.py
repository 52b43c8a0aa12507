"""Build datasets/corpus/: the photo corpus the bundled default weights are trained on.

Run: ``python datasets/make_training_set.py`` (or ``restorer datasets corpus``). Sources, all rebuilt
anywhere without a download from outside the package registries:

- the photographs (not renders, drawings or logos) inside four Debian wallpaper packages, fetched with
  ``apt-get download`` and unpacked with ``dpkg -x`` (no root needed);
- photographs that ship inside Python packages the project installs (scikit-image, matplotlib, Gradio).

Each picture is taken once, at its largest size (the Debian packages ship many sizes of one picture,
mostly as symlinks). Validation photos are whole photos held out of training. Output:

``datasets/corpus/train/NAME.png``      whole training photos (lossless copies)
``datasets/corpus/train_sub/NAME_sNNN.png``  480x480 crops, step 240, as BasicSR's extract_subimages:
                                         training reads these, so a patch never decodes a 5K photo
``datasets/corpus/val/NAME_cK.png``      up to two 256x256 crops of each validation photo (cheap to score)
``datasets/corpus/sources/NAME.jpg``      the Debian photos' original bytes (12 MB): carry this folder to a
                                         machine without apt-get (a GPU) and the script rebuilds the rest
``datasets/corpus.json``                 the manifest (committed): source, version, path, size, sha256,
                                         licence, split of every photo

The same run also writes ``datasets/skimage_sr/`` (16 scikit-image photos, chelsea and coffee held out):
the data of the first bundled weights, which their recipes (``options/train/bundled_*_cpu*.yml``) and
``weights/make_bundled*.py`` still read.

Deterministic; what already exists is kept. Without ``apt-get`` (or offline) the Debian photos are
skipped with a note and the corpus is the Python-package photos alone. Other wallpaper packages are
not used: they hold photos kept for independent evaluation.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "corpus"
MANIFEST = HERE / "corpus.json"
SUB_SIZE, SUB_STEP = 480, 240
VAL_CROP, VAL_CROPS = 256, 2

# Photographs in each package (renders, drawings and logos left out after looking at every picture).
# Licences as each package's debian/copyright or the wallpaper's metadata.json states them.
PLASMA = "usr/share/wallpapers/{}/contents/images/2560x1600.jpg"
DEBIAN_PHOTOS: dict[str, list[tuple[str, str, str]]] = {
    "plasma-workspace-wallpapers": [
        (name, PLASMA.format(folder), "LGPL-3.0 (metadata.json)")
        for name, folder in (
            ("plasma_bythewater", "BytheWater"),
            ("plasma_coldripple", "ColdRipple"),
            ("plasma_colorfulcups", "ColorfulCups"),
            ("plasma_darkesthour", "DarkestHour"),
            ("plasma_eveningglow", "EveningGlow"),
            ("plasma_fallenleaf", "FallenLeaf"),
            ("plasma_grey", "Grey"),
            ("plasma_kite", "Kite"),
            ("plasma_onestandsout", "OneStandsOut"),
            ("plasma_path", "Path"),
            ("plasma_summer_1am", "summer_1am"),
        )
    ],
    "lomiri-wallpapers-20.04": [
        ("lomiri_kleiber", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg", "CC-BY-SA-3.0"),
    ],
    # Every picture in these two is a render or a drawing: fetched, looked at, none taken.
    "ukui-wallpapers": [],
    "lomiri-wallpapers": [],
}

# (name, package, how to get it). Left out: skimage's microscopy, astronomy, text and drawings, gradio's
# bus (a drawing) and groot (a film render), matplotlib's logo and chart data.
PYTHON_PHOTOS: list[tuple[str, str, str]] = [
    ("skimage_astronaut", "scikit-image", "skimage.data.astronaut"),
    ("skimage_rocket", "scikit-image", "skimage.data.rocket"),
    ("skimage_motorcycle", "scikit-image", "skimage.data.stereo_motorcycle[0]"),
    ("skimage_brick", "scikit-image", "skimage.data.brick"),
    ("skimage_grass", "scikit-image", "skimage.data.grass"),
    ("skimage_gravel", "scikit-image", "skimage.data.gravel"),
    ("skimage_camera", "scikit-image", "skimage.data.camera"),
    ("skimage_clock", "scikit-image", "skimage.data.clock"),
    ("skimage_coins", "scikit-image", "skimage.data.coins"),
    ("skimage_chelsea", "scikit-image", "skimage.data.chelsea"),
    ("skimage_coffee", "scikit-image", "skimage.data.coffee"),
    ("matplotlib_grace_hopper", "matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    ("gradio_cheetah", "gradio", "gradio/media_assets/images/cheetah.jpg"),
    ("gradio_tower", "gradio", "gradio/media_assets/images/tower.jpg"),
    ("gradio_lion", "gradio", "gradio/media_assets/images/lion.jpg"),
    ("gradio_cheetah_face", "gradio", "gradio/media_assets/images/cheetah1.jpg"),
]

# Whole photos held out of training: the checkpoint is chosen on these, never on the test sets.
VALIDATION = {
    "plasma_path",
    "skimage_chelsea",
    "skimage_coffee",
    "matplotlib_grace_hopper",
    "gradio_cheetah",
    "gradio_tower",
}

PYTHON_LICENCES = {
    "scikit-image": "scikit-image data: public domain / CC0 or as listed in skimage/data/README.txt",
    "matplotlib": "matplotlib sample data (Grace Hopper portrait: public domain, US Navy)",
    "gradio": "gradio media_assets, Apache-2.0 package",
}


# The first bundled weights' data (datasets/skimage_sr): kept so their recipes stay reproducible.
SKIMAGE_SR = HERE / "skimage_sr"
SKIMAGE_SR_TRAIN = (
    "astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field",
    "immunohistochemistry", "retina", "brick", "grass", "gravel", "moon", "coins", "page", "text",
    "camera", "clock",
)  # fmt: skip
SKIMAGE_SR_VAL = ("chelsea", "coffee")
TRAIN = SKIMAGE_SR_TRAIN  # the name earlier code and tests know


def build_skimage_sr(out: Path = SKIMAGE_SR) -> None:
    """Write the 16 training and 2 validation photos of ``datasets/skimage_sr`` (gray as 3 channels)."""
    from skimage import data

    for split, names in (("train", SKIMAGE_SR_TRAIN), ("val", SKIMAGE_SR_VAL)):
        for name in names:
            path = out / split / f"{name}.png"
            if path.exists():
                continue
            if name.startswith("motorcycle_"):
                image = data.stereo_motorcycle()[0 if name.endswith("left") else 1]
            else:
                image = getattr(data, name)()
            _save_png(path, _as_rgb8(image))


@dataclass
class Entry:
    name: str
    source: str  # "debian:<package>" or "python:<package>"
    version: str
    path: str  # inside the package
    width: int
    height: int
    sha256: str  # of the source file (Debian) or of the decoded RGB pixels (Python loaders)
    licence: str
    split: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _save_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)


def _as_rgb8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype.kind == "f":
        image = (np.clip(image, 0, 1) * 255).round()
    image = image.astype(np.uint8, copy=False)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _debian_version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


def _fetch_debian(package: str, cache: Path) -> Path | None:
    """The package's .deb in ``cache`` (downloaded once), or None with a note."""
    found = sorted(cache.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        print(f"note: no apt-get/dpkg here; skipping the Debian package {package}", file=sys.stderr)
        return None
    cache.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, text=True)
    found = sorted(cache.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        print(
            f"note: 'apt-get download {package}' failed ({result.stderr.strip()[-200:]}); "
            "skipping it (run 'apt-get update' first if the package lists are empty)",
            file=sys.stderr,
        )
        return None
    return found[-1]


def _known_photos(manifest: Path) -> dict[str, dict]:
    try:
        return {p["name"]: p for p in json.loads(manifest.read_text())["photos"]}
    except (OSError, ValueError, KeyError):
        return {}


def _stored_sources(wanted, sources: Path, known: dict[str, dict]) -> list[tuple[str, bytes, str]] | None:
    """``(name, bytes, version)`` of every wanted photo from ``sources/`` when all are there and match
    the manifest's sha256 (a corpus carried to a machine without apt-get), else None."""
    found = []
    for name, inner, _ in wanted:
        path, record = sources / f"{name}{Path(inner).suffix}", known.get(name)
        if record is None or not path.is_file():
            return None
        data = path.read_bytes()
        if _sha256(data) != record["sha256"]:
            return None
        found.append((name, data, record["version"]))
    return found


def _debian_photos(cache: Path, sources: Path, known: dict[str, dict]) -> list[tuple[Entry, np.ndarray]]:
    photos = []
    for package, wanted in DEBIAN_PHOTOS.items():
        if not wanted:
            continue
        stored = _stored_sources(wanted, sources, known)
        if stored is None:
            deb = _fetch_debian(package, cache)
            if deb is None:
                continue
            version = _debian_version(deb)
            stored = []
            with tempfile.TemporaryDirectory() as unpacked:
                subprocess.run(["dpkg-deb", "-x", str(deb), unpacked], check=True)
                for name, inner, _ in wanted:
                    data = Path(unpacked, inner).resolve().read_bytes()  # sizes are symlinks to the largest
                    sources.mkdir(parents=True, exist_ok=True)
                    (sources / f"{name}{Path(inner).suffix}").write_bytes(data)  # the original bytes
                    stored.append((name, data, version))
        for (name, inner, licence), (_, data, version) in zip(wanted, stored):
            rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
            entry = Entry(
                name, f"debian:{package}", version, inner, rgb.shape[1], rgb.shape[0],
                _sha256(data), licence, "val" if name in VALIDATION else "train",
            )  # fmt: skip
            photos.append((entry, rgb))
    return photos


def _package_file(how: str) -> Path:
    package, _, inner = how.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(package)
    return Path(spec.origin).parent / inner


def _python_photos() -> list[tuple[Entry, np.ndarray]]:
    photos = []
    for name, package, how in PYTHON_PHOTOS:
        try:
            version = importlib.metadata.version(package)
            if how.startswith("skimage.data."):
                from skimage import data

                attr = how.removeprefix("skimage.data.")
                image = getattr(data, attr[:-3])()[0] if attr.endswith("[0]") else getattr(data, attr)()
                rgb = _as_rgb8(image)
            else:
                file = _package_file(how)
                rgb = np.ascontiguousarray(cv2.imread(str(file), cv2.IMREAD_COLOR)[..., ::-1])
        except Exception as error:  # a package missing or a newer one without the file
            print(f"note: skipping {name} from {package}: {error}", file=sys.stderr)
            continue
        entry = Entry(
            name, f"python:{package}", version, how, rgb.shape[1], rgb.shape[0],
            _sha256(rgb.tobytes()), PYTHON_LICENCES[package], "val" if name in VALIDATION else "train",
        )  # fmt: skip
        photos.append((entry, rgb))
    return photos


def subimage_boxes(
    height: int, width: int, size: int = SUB_SIZE, step: int = SUB_STEP
) -> list[tuple[int, int]]:
    """Top-left corners of BasicSR-style crops: a grid of ``step``, plus the last row/column flush."""
    if height < size or width < size:
        return [(0, 0)]
    tops = list(range(0, height - size + 1, step))
    lefts = list(range(0, width - size + 1, step))
    if tops[-1] != height - size:
        tops.append(height - size)
    if lefts[-1] != width - size:
        lefts.append(width - size)
    return [(t, left) for t in tops for left in lefts]


def val_boxes(height: int, width: int) -> list[tuple[int, int]]:
    """Up to two fixed ``VAL_CROP`` squares: the centre, and the centre of the left half."""
    size = VAL_CROP
    if height < size or width < size:
        return [(0, 0)]
    centre = ((height - size) // 2, (width - size) // 2)
    boxes = [centre]
    if width >= 2 * size:
        boxes.append(((height - size) // 2, max(0, width // 4 - size // 2)))
    return boxes[:VAL_CROPS]


def write_photo(entry: Entry, rgb: np.ndarray, out: Path) -> int:
    """Write the whole photo and its crops; returns how many crops exist for it."""
    whole = out / entry.split / f"{entry.name}.png" if entry.split == "train" else None
    if whole is not None and not whole.exists():
        _save_png(whole, rgb)
    h, w = rgb.shape[:2]
    if entry.split == "train":
        boxes, folder, size, tag = subimage_boxes(h, w), out / "train_sub", SUB_SIZE, "s"
    else:
        boxes, folder, size, tag = val_boxes(h, w), out / "val", VAL_CROP, "c"
    for k, (top, left) in enumerate(boxes):
        path = folder / f"{entry.name}_{tag}{k:03d}.png"
        if not path.exists():
            _save_png(path, rgb[top : top + size, left : left + size])
    return len(boxes)


def build(out: Path = OUT, manifest: Path = MANIFEST, debian_cache: Path | None = None) -> list[Entry]:
    """Build the corpus under ``out`` and write ``manifest``; returns the entries."""
    cache = debian_cache or out / "_debs"
    entries = []
    debian = _debian_photos(cache, out / "sources", _known_photos(manifest))
    for entry, rgb in [*debian, *_python_photos()]:
        crops = write_photo(entry, rgb, out)
        entries.append(entry)
        print(f"{entry.split:5s} {entry.name:28s} {entry.width}x{entry.height} -> {crops} crop(s)")
    if not any(e.source.startswith("debian:") for e in entries):
        print(
            "note: no Debian photos in this corpus (no apt-get here): it is the Python-package photos "
            "alone, and weights trained on it will be weaker than the shipped ones",
            file=sys.stderr,
        )
    record = {
        "about": "Photo corpus of the bundled weights; rebuild: python datasets/make_training_set.py",
        "subimages": {"size": SUB_SIZE, "step": SUB_STEP},
        "val_crops": {"size": VAL_CROP, "count": VAL_CROPS},
        "photos": [asdict(e) for e in entries],
    }
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(manifest)
    train = [e for e in entries if e.split == "train"]
    megapixels = sum(e.width * e.height for e in train) / 1e6
    print(
        f"{len(train)} training photos ({megapixels:.1f} MP), {len(entries) - len(train)} validation photos"
    )
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT, help="corpus folder (default datasets/corpus)")
    parser.add_argument(
        "--manifest", type=Path, default=MANIFEST, help="manifest path (default datasets/corpus.json)"
    )
    parser.add_argument("--no-skimage-sr", action="store_true", help="do not write datasets/skimage_sr/")
    args = parser.parse_args(argv)
    build(args.out, args.manifest)
    if not args.no_skimage_sr:
        build_skimage_sr()
    return 0


if __name__ == "__main__":
    sys.exit(main())
