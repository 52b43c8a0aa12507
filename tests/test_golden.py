"""Every shipped default gives the output it gave when it shipped (tests/golden/make_golden.py).

A changed weight file, or an engine change in padding, tiling, precision or colour handling, shows up
here as a failure instead of as a quietly different picture for users.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from restorer import io as rio
from restorer import weights as rw
from restorer.metrics import psnr_all_channels

GOLDEN = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN))
import make_golden  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RECORD = json.loads((GOLDEN / "golden.json").read_text())


def test_every_shipped_default_has_a_golden_output():
    assert sorted(RECORD) == sorted(make_golden.golden_name(e) for e in make_golden.shipped_entries())


@pytest.mark.parametrize("entry", make_golden.shipped_entries(), ids=lambda e: e.key)
def test_shipped_default_reproduces_its_golden_output(entry):
    name = make_golden.golden_name(entry)
    changed = f"{entry.weight_file} changed: run python tests/golden/make_golden.py"
    assert RECORD[name] == entry.sha256, changed
    if not rw.is_available(entry):
        pytest.fail(f"{entry.weight_file} is shipped and must be in weights/")
    output = make_golden.run_default(entry)
    golden = rio.read_image(GOLDEN / name).pixels
    assert output.shape == golden.shape
    # 16-bit storage and BLAS differences between machines stay far above 60 dB; any real change
    # (other weights, a padding or colour bug) falls far below it.
    assert psnr_all_channels(output, golden) > 60
