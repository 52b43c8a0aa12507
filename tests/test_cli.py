"""The `restorer` command line: outputs, kept image properties, exit codes, messages, safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from restorer.cli import main

REPO = Path(__file__).resolve().parent.parent


def _png(path: Path, array: np.ndarray) -> Path:
    if array.ndim == 3:
        array = array[..., [2, 1, 0, 3][: array.shape[2]]]
    ok, buf = cv2.imencode(".png", array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def _read_raw(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.fixture
def inputs(tmp_path, rgb_image):
    folder = tmp_path / "in"
    folder.mkdir()
    _png(folder / "rgb.png", rgb_image)
    _png(folder / "gray.png", rgb_image[..., 1])
    rgba = np.dstack([rgb_image, np.linspace(0, 255, rgb_image.shape[1], dtype=np.uint8)[None].repeat(48, 0)])
    _png(folder / "rgba.png", rgba)
    _png(folder / "deep.png", rgb_image.astype(np.uint16) * 3)  # 16-bit, max < 1024: still 16-bit
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_infer_folder_keeps_gray_alpha_and_16bit(tiny_zoo, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["infer", "--task", "sr_x2", "--model", "tiny-hat", str(inputs), "-o", str(out), "-q"])
    assert code == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "notes.txt" in err
    rgb = _read_raw(out / "rgb_out.png")
    gray = _read_raw(out / "gray_out.png")
    rgba = _read_raw(out / "rgba_out.png")
    deep = _read_raw(out / "deep_out.png")
    assert rgb.shape == (96, 112, 3) and rgb.dtype == np.uint8
    assert gray.shape == (96, 112)
    assert rgba.shape == (96, 112, 4)
    assert deep.shape == (96, 112, 3) and deep.dtype == np.uint16
    # alpha upscaled by the model on a gray replica: the horizontal ramp survives
    assert rgba[:, 4, 3].mean() < rgba[:, -4, 3].mean() - 100
    assert sorted(p.name for p in out.iterdir()) == [
        "deep_out.png",
        "gray_out.png",
        "rgb_out.png",
        "rgba_out.png",
    ]


def test_infer_outscale_suffix_and_ext(tiny_zoo, inputs, tmp_path):
    out = tmp_path / "o"
    code = main(
        [
            "infer",
            "--task",
            "sr_x2",
            "-m",
            "tiny-hat",
            str(inputs / "rgb.png"),
            "-o",
            str(out),
            "-s",
            "3",
            "--suffix",
            "",
            "--ext",
            "jpg",
            "-q",
        ]
    )
    assert code == 0
    img = _read_raw(out / "rgb.jpg")
    assert img.shape == (144, 168, 3)


def test_infer_alpha_bicubic(tiny_zoo, inputs, tmp_path):
    out = tmp_path / "o"
    code = main(
        [
            "infer",
            "--task",
            "sr_x4",
            "-m",
            "tiny-hat",
            str(inputs / "rgba.png"),
            "-o",
            str(out),
            "--alpha",
            "bicubic",
            "-q",
        ]
    )
    assert code == 0
    assert _read_raw(out / "rgba_out.png").shape == (192, 224, 4)


def test_bad_file_is_reported_and_the_rest_written(tiny_zoo, inputs, tmp_path, capsys):
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    code = main(["infer", "--task", "sr_x3", "-m", "tiny-hat", str(inputs), "-o", str(out), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 image(s) failed" in err and "broken.png" in err
    assert len(list(out.glob("*_out.png"))) == 4


def test_never_overwrites_an_input(tiny_zoo, inputs, capsys):
    before = (inputs / "rgb.png").read_bytes()
    code = main(
        [
            "infer",
            "--task",
            "sr_x2",
            "-m",
            "tiny-hat",
            str(inputs / "rgb.png"),
            "-o",
            str(inputs),
            "--suffix",
            "",
            "-q",
        ]
    )
    assert code == 1
    assert (inputs / "rgb.png").read_bytes() == before
    assert "rgb.png" in capsys.readouterr().err


def test_recursive_keeps_subfolders(tiny_zoo, inputs, tmp_path, rgb_image):
    (inputs / "sub").mkdir()
    _png(inputs / "sub" / "rgb.png", rgb_image)
    out = tmp_path / "out"
    assert main(["infer", "--task", "sr_x2", "-m", "tiny-hat", str(inputs), "-o", str(out), "-r", "-q"]) == 0
    assert (out / "rgb_out.png").exists() and (out / "sub" / "rgb_out.png").exists()
    out2 = tmp_path / "out2"
    assert main(["infer", "--task", "sr_x2", "-m", "tiny-hat", str(inputs), "-o", str(out2), "-q"]) == 0
    assert not (out2 / "sub").exists()


def test_missing_weights_message_names_file_folder_and_source(tmp_path, monkeypatch, rgb_image, capsys):
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    img = _png(tmp_path / "a.png", rgb_image)
    code = main(["infer", "--task", "sr_x4", "--model", "hat-s", str(img), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "HAT-S_SRx4.pth" in err and "drive.google.com" in err and "weights" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["infer", "--task", "sr_x4", "nowhere.png"], "No such file or folder"),
        (["infer", "--task", "sr_x9", "a.png"], "invalid choice"),
        (["infer", "--task", "sr_x4", "--model", "nope", "."], "not available for task"),
        (["infer", "--task", "sr_x4", "--tile", "-3", "."], "must be >= 0"),
        pytest.param(
            ["infer", "--task", "sr_x4", "--device", "cuda:0", "--model", "tiny-hat", "."],
            "no CUDA GPU",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
        (["infer", "--task", "sr_x4", "--device", "tpu", "--model", "tiny-hat", "."], "Unknown device"),
        (["weights", "init", "nope", "--scale", "2", "-o", "x.pth"], "Unknown model"),
    ],
)
def test_usage_errors_exit_2_with_a_message(tiny_zoo, argv, needle, capsys, tmp_path, monkeypatch, rgb_image):
    monkeypatch.chdir(tmp_path)
    _png(tmp_path / "a.png", rgb_image)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err


def test_models_and_weights_list(tiny_zoo, capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for task in ("sr_x2", "sr_x3", "sr_x4", "real_sr_x4"):
        assert task in text
    assert "hat-s" in text and "real-hat-gan" in text
    assert main(["weights", "list"]) == 0
    text = capsys.readouterr().out
    assert "HAT-L_SRx4_ImageNet-pretrain.pth" in text and "present" in text  # tiny-hat files are present


def _run_cli(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "restorer", *args], capture_output=True, text=True, **kwargs)


def test_subprocess_user_mistakes_have_no_traceback(tmp_path):
    result = _run_cli(["infer", "--task", "sr_x4", str(tmp_path / "missing.png")])
    assert result.returncode == 2
    assert result.stderr.startswith("error: No such file") and "Traceback" not in result.stderr
    result = _run_cli(["infer"])
    assert result.returncode == 2 and "Traceback" not in result.stderr


_SLOW_RUN = """
import signal, sys, time
# A job started in the background by a non-interactive shell inherits SIGINT as ignored;
# restore Python's handler so the test sees what a user pressing Ctrl-C sees.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
import conftest
from types import MappingProxyType
from restorer import zoo
entry = conftest.tiny_entry(4)
zoo.ZOO = MappingProxyType({{entry.key: entry, **zoo.ZOO}})
import restorer.engine.runner as runner
original = runner.Restorer._forward
def slow_forward(self, x):
    time.sleep(0.4)
    return original(self, x)
runner.Restorer._forward = slow_forward
from restorer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_leaves_no_partial_output(tmp_path, rgb_image):
    from conftest import tiny_entry, write_checkpoint

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(12):
        _png(folder / f"img{i:02d}.png", np.roll(rgb_image, i, axis=1))
    weights = write_checkpoint(tiny_entry(4), tmp_path / "w.pth")
    out = tmp_path / "out"
    script = _SLOW_RUN.format(tests=str(Path(__file__).parent))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            "infer",
            "--task",
            "sr_x4",
            "-m",
            "tiny-hat",
            "--weights",
            str(weights),
            "--tile",
            "16",
            str(folder),
            "-o",
            str(out),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    # Generous: on a loaded machine importing torch alone can take minutes.
    deadline = time.time() + 600
    while time.time() < deadline and not (out.exists() and any(out.glob("*_out.png"))):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    assert any(out.glob("*_out.png")), "no output appeared before the deadline"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Interrupted" in err and "Traceback" not in err
    written = sorted(os.listdir(out))
    assert 1 <= len(written) < 12
    for name in written:  # every file present is a complete image; no temporary files remain
        assert name.endswith("_out.png"), written
        assert _read_raw(out / name).shape == (192, 224, 3)
