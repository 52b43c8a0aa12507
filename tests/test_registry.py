"""restorer's architecture registry: inference never imports basicsr; training bridges into BasicSR's."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from torch import nn

from restorer import zoo
from restorer.archs import ARCH_MODULES, register_all, registry

ROOT = Path(__file__).resolve().parents[1]
ARCHS_DIR = ROOT / "restorer" / "archs"


def _run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    # A fresh interpreter: this test process has imported basicsr through other tests long ago.
    env_code = "import os; os.environ.setdefault('OMP_NUM_THREADS', '1')\n" + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", env_code], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_inference_of_the_default_never_imports_basicsr(tmp_path):
    result = _run_python(
        """
        import sys
        import numpy as np, cv2
        import restorer.infer

        cv2.imwrite("in.png", (np.random.default_rng(0).random((12, 12, 3)) * 255).astype(np.uint8))
        assert restorer.infer.main(["--task", "sr_x4", "in.png", "-o", "out"]) == 0
        assert cv2.imread("out/in_out.png").shape == (48, 48, 3)
        loaded = [name for name in ("basicsr", "compressai") if name in sys.modules]
        assert not loaded, loaded
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_registering_every_architecture_imports_neither_basicsr_nor_compressai(tmp_path):
    result = _run_python(
        """
        import sys
        from restorer.archs import build_network, register_all
        from restorer import zoo

        register_all()
        build_network(zoo.get_entry("hat-s", 4).network_options())
        loaded = [name for name in ("basicsr", "compressai") if name in sys.modules]
        assert not loaded, loaded
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", ARCH_MODULES)
def test_no_arch_module_imports_basicsr_or_compressai_at_module_level(module):
    tree = ast.parse((ARCHS_DIR / f"{module}.py").read_text())
    top_level = []
    for node in tree.body:  # only module-level statements: imports inside functions are lazy
        if isinstance(node, ast.Import):
            top_level += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.append(node.module)
    assert not [name for name in top_level if name.split(".")[0] in {"basicsr", "compressai"}]


def test_every_zoo_architecture_is_registered_under_its_official_name():
    archs = register_all()
    for arch in {entry.arch for entry in zoo.entries()}:
        cls = registry.get(arch)
        assert cls.__name__ == arch and archs.get(arch) is cls and arch in archs


def test_a_second_class_under_a_taken_name_is_refused():
    register_all()
    again = registry.ARCHS.register(registry.get("HAT"))  # the same class: a no-op
    assert again is registry.get("HAT")
    impostor = type("HAT", (nn.Module,), {})
    with pytest.raises(KeyError, match="already registered"):
        registry.ARCHS.register(impostor)
    assert registry.get("HAT") is not impostor
    with pytest.raises(KeyError, match="No architecture named 'NoSuchNet'"):
        registry.get("NoSuchNet")


def test_training_bridges_every_architecture_into_basicsr():
    from restorer.training.archs import register_in_basicsr

    basicsr_registry = register_in_basicsr()
    assert register_in_basicsr() is basicsr_registry  # idempotent
    for name, cls in register_all().items():
        assert basicsr_registry.get(name) is cls
    from basicsr.archs import build_network as basicsr_build_network

    from conftest import TINY_HAT

    assert isinstance(basicsr_build_network(dict(TINY_HAT, upscale=2)), registry.get("HAT"))
