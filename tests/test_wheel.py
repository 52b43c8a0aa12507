"""The package works installed from a wheel, away from the clone: the shipped weights and sample
images travel as package data, so the main job runs with no download and no checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    leftover = not (ROOT / "build").exists()  # setuptools builds in ./build; stale files there leak in
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        cwd=out,
    )
    if leftover:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    (found,) = out.glob("restorer-*.whl")
    return found


def test_the_wheel_carries_the_shipped_weights_and_samples(wheel):
    from restorer import zoo

    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        e.weight_file for e in zoo.ZOO.values() if (ROOT / "restorer" / "bundled" / e.weight_file).is_file()
    }
    assert shipped and {f"restorer/bundled/{name}" for name in shipped} <= names
    samples = {p.name for p in (ROOT / "restorer" / "samples").iterdir()}
    assert {f"restorer/samples/{name}" for name in samples} <= names


@pytest.mark.slow
def test_an_installed_wheel_runs_the_main_job_outside_the_clone(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
    )
    work = tmp_path / "elsewhere"  # no weights/ folder, no clone on the path
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1", "RESTORER_WEIGHTS_DIR": ""}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # nothing downloaded earlier either
    where = subprocess.run(
        [sys.executable, "-c", "import restorer, pathlib; print(pathlib.Path(restorer.__file__).parent)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where) == site / "restorer"
    sample = site / "restorer" / "samples" / "camera_gray.png"
    result = subprocess.run(
        [sys.executable, "-m", "restorer", "infer", "--task", "sr_x4", str(sample), "-o", "out", "-q"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert (work / "out" / "camera_gray_out.png").is_file()
