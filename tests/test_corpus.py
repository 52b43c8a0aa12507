"""The training corpus script (datasets/make_training_set.py): crops, splits, manifest, fallback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "datasets"))
import make_training_set as corpus  # noqa: E402

sys.path.remove(str(REPO / "datasets"))


@pytest.mark.parametrize("shape", [(1600, 2560), (3391, 6028), (500, 741), (480, 480)])
def test_subimages_cover_every_pixel_and_stay_inside(shape):
    h, w = shape
    covered = np.zeros(shape, bool)
    boxes = corpus.subimage_boxes(h, w)
    for top, left in boxes:
        assert 0 <= top <= h - corpus.SUB_SIZE and 0 <= left <= w - corpus.SUB_SIZE
        covered[top : top + corpus.SUB_SIZE, left : left + corpus.SUB_SIZE] = True
    assert covered.all()
    assert len(set(boxes)) == len(boxes)


def test_a_photo_smaller_than_a_crop_is_one_crop():
    assert corpus.subimage_boxes(300, 451) == [(0, 0)]
    assert corpus.val_boxes(200, 200) == [(0, 0)]
    assert len(corpus.val_boxes(400, 600)) == 2


def test_python_only_corpus_is_deterministic_and_keeps_validation_out(tmp_path, monkeypatch, capsys):
    """Without apt-get the corpus is the Python-package photos alone, said in a note; the manifest
    lists every photo once with its split; validation photos never reach the training crops; a second
    run changes nothing."""
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    out, manifest = tmp_path / "corpus", tmp_path / "corpus.json"
    entries = corpus.build(out, manifest, debian_cache=tmp_path / "debs")
    assert "no apt-get" in capsys.readouterr().err
    assert entries and all(e.source.startswith("python:") for e in entries)
    record = json.loads(manifest.read_text())
    names = [p["name"] for p in record["photos"]]
    assert len(names) == len(set(names))
    for photo in record["photos"]:
        assert photo["split"] == ("val" if photo["name"] in corpus.VALIDATION else "train")
        assert len(photo["sha256"]) == 64 and photo["licence"] and photo["version"]
    train_crops = {p.name.rsplit("_s", 1)[0] for p in (out / "train_sub").glob("*.png")}
    val_crops = {p.name.rsplit("_c", 1)[0] for p in (out / "val").glob("*.png")}
    assert train_crops == {n for n in names if n not in corpus.VALIDATION}
    assert val_crops == {n for n in names if n in corpus.VALIDATION}
    assert not (out / "train" / "skimage_chelsea.png").exists()
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    first = manifest.read_text()
    corpus.build(out, manifest, debian_cache=tmp_path / "debs")
    assert manifest.read_text() == first
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == stamps


def test_committed_manifest_matches_the_script():
    """datasets/corpus.json is what the script's photo lists give: every Debian photo from the four
    allowed packages, the validation split as declared, no photo twice."""
    record = json.loads((REPO / "datasets" / "corpus.json").read_text())
    photos = {p["name"]: p for p in record["photos"]}
    declared = {name for items in corpus.DEBIAN_PHOTOS.values() for name, _, _ in items}
    declared |= {name for name, _, _ in corpus.PYTHON_PHOTOS}
    assert set(photos) == declared
    allowed = {f"debian:{p}" for p in corpus.DEBIAN_PHOTOS} | {
        "python:scikit-image",
        "python:matplotlib",
        "python:gradio",
    }
    assert {p["source"] for p in photos.values()} <= allowed
    assert {n for n, p in photos.items() if p["split"] == "val"} == corpus.VALIDATION
    assert len({p["sha256"] for p in photos.values()}) == len(photos)


def test_stored_sources_rebuild_the_debian_photos_without_apt(tmp_path, monkeypatch):
    """A corpus whose sources/ folder was carried to a machine without apt-get (a GPU machine) rebuilds
    from those original bytes when they match the manifest's sha256, and refuses ones that do not."""
    import cv2
    from skimage import data

    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    fake = {"fake-wallpapers": [("fake_photo", "usr/p.png", "CC0-1.0")]}
    monkeypatch.setattr(corpus, "DEBIAN_PHOTOS", fake)
    monkeypatch.setattr(corpus, "PYTHON_PHOTOS", [])
    out, manifest = tmp_path / "corpus", tmp_path / "corpus.json"
    png = cv2.imencode(".png", data.astronaut()[..., ::-1])[1].tobytes()
    (out / "sources").mkdir(parents=True)
    (out / "sources" / "fake_photo.png").write_bytes(png)
    assert corpus.build(out, manifest) == []  # no manifest yet: the bytes are not trusted
    photo = {"name": "fake_photo", "sha256": corpus._sha256(png), "version": "1.0-1"}
    manifest.write_text(json.dumps({"photos": [photo]}))
    (entry,) = corpus.build(out, manifest)
    assert (entry.source, entry.version, entry.split) == ("debian:fake-wallpapers", "1.0-1", "train")
    assert (entry.width, entry.height) == (512, 512) and len(list((out / "train_sub").glob("*.png"))) == 4
    (out / "sources" / "fake_photo.png").write_bytes(png[:-10] + b"0123456789")
    assert corpus.build(out, manifest) == []


@pytest.mark.slow
def test_gpu_training_command_dry_runs_on_cpu(tmp_path):
    """bench/gpu_train_defaults.py (the prepared one-GPU command) derives its recipe, trains, validates
    on the corpus split and exports a strictly loading file with its metadata, here on a CPU."""
    import subprocess

    from safetensors import safe_open

    if not (REPO / "datasets" / "corpus" / "val").is_dir():
        pytest.skip("the corpus is not built (python datasets/make_training_set.py)")
    command = [sys.executable, "bench/gpu_train_defaults.py", "--dry-run", "--only", "denoise"]
    result = subprocess.run(
        [*command, "--out", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    run = summary["runs"]["denoise"]
    assert run["exit"] == 0 and run["iterations"] == 2 and 20 < run["val_psnr"]["corpus_val_color"] < 40
    with safe_open(str(tmp_path / run["weights"]), "pt") as f:
        meta = f.metadata()
    assert meta["iterations"] == "2" and meta["device"] == "cpu (dry run)" and int(meta["wall_time_s"]) >= 0
