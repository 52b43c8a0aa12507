"""Optional extras: the core install runs the main job; a verb that needs a missing extra says, in one
line and with no traceback, which extra installs it."""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from restorer._compat import require_extra
from restorer.cli import main
from restorer.errors import MissingExtraError, UsageError

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "restorer" / "bundled"
CODEC_FILE = "restorer_S2LIC_small_q1_skimage.safetensors"
# Every import an extra provides (pyproject.toml's optional-dependencies), as Python module names.
EXTRA_MODULES = (
    "basicsr",
    "compressai",
    "gradio",
    "pydicom",
    "nibabel",
    "lpips",
    "matplotlib",
    "bm3d",
    "onnx",
    "onnxruntime",
)


def _one_line_naming(err: str, extra: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert f'pip install "restorer[{extra}]"' in err and "Traceback" not in err, err


def test_require_extra_returns_the_module_or_names_the_extra(monkeypatch):
    assert require_extra("numpy", "core", "test").__name__ == "numpy"
    monkeypatch.setitem(sys.modules, "compressai", None)  # import compressai -> ImportError
    with pytest.raises(
        MissingExtraError,
        match=r'S2LIC needs compressai, which is not installed: pip install "restorer\[codec\]"',
    ):
        require_extra("compressai", "codec", "S2LIC")
    assert issubclass(MissingExtraError, UsageError)  # exit status 2, printed without a traceback


def test_pyproject_extras_hold_what_the_code_imports_lazily():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    extras = project["optional-dependencies"]
    for name in ("basicsr", "compressai", "gradio", "pydicom", "nibabel", "lpips", "matplotlib", "bm3d"):
        assert name not in core, name
    assert {"train", "codec", "web", "medical", "bench", "export", "all", "dev"} <= set(extras)
    everything = {
        spec for name in ("train", "codec", "web", "medical", "bench", "export") for spec in extras[name]
    }
    assert set(extras["all"]) == everything
    assert set(extras["dev"]) >= everything


def test_core_install_runs_the_main_job_and_gated_verbs_name_their_extra(tmp_path):
    """A fresh interpreter in which every extra's package fails to import, as after a plain
    `pip install restorer`: the sr_x4 default runs and inspect works; the codec's file and verbs name
    [codec]."""
    code = f"""
        import os, sys
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        for name in {EXTRA_MODULES!r}:
            sys.modules[name] = None  # `import name` (and its submodules) raises ImportError
        import numpy as np, cv2
        from restorer.cli import main

        cv2.imwrite("in.png", (np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8))
        assert main(["infer", "--task", "sr_x4", "in.png", "-o", "out", "-q"]) == 0
        assert main(["inspect", {str(BUNDLED / "restorer_CRAFT_SRx4_corpus.safetensors")!r}]) == 0
        print("CODEC-INSPECT", main(["inspect", {str(BUNDLED / CODEC_FILE)!r}]))
        print("CODEC-VERB", main(["compress", "in.png", "-o", "c"]))
        print("LOADED", sorted(n for n in {EXTRA_MODULES!r} if sys.modules.get(n) is not None))
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CODEC-INSPECT 1" in result.stdout and "CODEC-VERB 2" in result.stdout
    assert "LOADED []" in result.stdout
    assert "Not checked: S2LIC (the learned codec) needs compressai" in result.stderr
    assert result.stderr.count('pip install "restorer[codec]"') == 2 and "Traceback" not in result.stderr
    assert (tmp_path / "out" / "in_out.png").is_file()


def test_train_without_basicsr_names_the_train_extra(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "basicsr", None)
    option_file = next((ROOT / "options" / "train").rglob("*.yml"))
    assert main(["train", "-opt", str(option_file)]) == 2
    _one_line_naming(capsys.readouterr().err, "train")


def test_benchmark_without_basicsr_or_matplotlib_names_the_bench_extra(monkeypatch, capsys, tmp_path):
    argv = ["benchmark", "--task", "sr_x2", "--dataset", str(tmp_path), "--out", str(tmp_path / "o")]
    monkeypatch.setitem(sys.modules, "basicsr", None)
    assert main(argv) == 2
    _one_line_naming(capsys.readouterr().err, "bench")
    monkeypatch.delitem(sys.modules, "basicsr")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main([*argv, "--plot"]) == 2  # checked before any model runs
    err = capsys.readouterr().err
    _one_line_naming(err, "bench")
    assert "--plot needs matplotlib" in err


def test_medical_infer_without_pydicom_names_the_medical_extra(monkeypatch, capsys, tmp_path):
    source = tmp_path / "scan.nii.gz"
    source.write_bytes(b"")  # never read: the extra is checked first
    monkeypatch.setitem(sys.modules, "pydicom", None)
    assert main(["infer", "--task", "ct_denoise", str(source), "-o", str(tmp_path / "o")]) == 2
    _one_line_naming(capsys.readouterr().err, "medical")


def test_web_demo_without_gradio_names_the_web_extra(monkeypatch, capsys):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # app.main installs a SIGTERM handler
    spec = importlib.util.spec_from_file_location("restorer_app_launcher", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    monkeypatch.setitem(sys.modules, "gradio", None)
    assert app.main([]) == 2
    _one_line_naming(capsys.readouterr().err, "web")
