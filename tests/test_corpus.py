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
