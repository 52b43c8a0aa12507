"""Checkpoints that describe themselves: architecture, variant and scale from the state dict alone."""

from __future__ import annotations

import pytest
import torch

from restorer import zoo
from restorer.archs import build_network
from restorer.detect import detect_state, entry_for_task, inspect_checkpoint
from restorer.errors import CheckpointError, UsageError


def _meta_signature(entry: zoo.ZooEntry) -> dict[str, torch.Tensor]:
    from restorer.weights import zoo_signature

    return {k: torch.empty(shape, device="meta") for k, shape in zoo_signature(entry).items()}


def _shapes(entry: zoo.ZooEntry) -> dict[str, tuple[int, ...]]:
    """Built afresh (not through the cache under test)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in build_network(entry.network_options()).state_dict().items()}


def test_every_zoo_variant_is_recognised_from_its_shapes():
    """Each variant's layout is detected as itself or as variants with the very same network."""
    layouts: dict[str, list[zoo.ZooEntry]] = {}
    for entry in zoo.ZOO.values():
        layouts.setdefault(repr(entry.network_g), []).append(entry)
    for same_layout in layouts.values():
        fits = detect_state(_meta_signature(same_layout[0]))
        assert {e.model for e in same_layout} <= {e.model for e in fits}, same_layout[0].model
        for fit in fits:  # anything else detected has the same names and shapes
            assert _shapes(fit) == _shapes(same_layout[0])


@pytest.fixture(scope="module")
def craft_x2_state():
    torch.manual_seed(0)
    return build_network(zoo.get_entry("craft", 2).network_options()).state_dict()


@pytest.mark.parametrize(
    "wrap, key, prefixed",
    [
        (lambda s: {"params_ema": s, "params": s}, "params_ema", False),
        (lambda s: {"params": s}, "params", False),
        (lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}}, "state_dict", True),
        (lambda s: s, None, False),
    ],
)
def test_a_renamed_file_says_what_it_is(tmp_path, craft_x2_state, wrap, key, prefixed):
    path = tmp_path / "my_favourite_upscaler.pth"
    torch.save(wrap(craft_x2_state), path)
    info = inspect_checkpoint(path)
    assert (info.entry.model, info.entry.scale, info.entry.arch) == ("craft", 2, "CRAFT")
    assert {e.model for e in info.fits} >= {"craft", "craft-bundled"}  # one layout, official first
    assert info.container_key == key and info.module_prefix == prefixed
    assert info.tasks == ("sr_x2",) and info.dtypes == ("float32",)
    assert info.parameters == sum(v.numel() for v in craft_x2_state.values() if v.is_floating_point())
    text = info.describe()
    assert "CRAFT" in text and "x2" in text and "sr_x2" in text


def test_safetensors_and_the_task_check(tmp_path, craft_x2_state):
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in craft_x2_state.items()}, str(path))
    info = inspect_checkpoint(path)
    assert entry_for_task(info, None).model == "craft"
    assert entry_for_task(info, "sr_x2").scale == 2
    with pytest.raises(UsageError, match="does not serve --task sr_x4: use --task sr_x2"):
        entry_for_task(info, "sr_x4")


def test_an_unknown_layout_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="does not match any model restorer knows"):
        inspect_checkpoint(path)


def test_cli_runs_a_renamed_file_without_model_or_task(tmp_path, craft_x2_state, capsys):
    import cv2
    from skimage import data

    from restorer.cli import main

    weights = tmp_path / "HAT-S_renamed.pth"  # the name says HAT; the tensors say CRAFT x2
    torch.save({"params": craft_x2_state}, weights)
    image = tmp_path / "in.png"
    cv2.imwrite(str(image), data.astronaut()[:24, :20, ::-1])
    out = tmp_path / "out"
    assert main(["infer", "--weights", str(weights), str(image), "-o", str(out), "-q"]) == 0
    assert "HAT-S_renamed.pth is CRAFT x2 (--model craft)" in capsys.readouterr().err
    assert cv2.imread(str(out / "in_out.png")).shape == (48, 40, 3)
    assert main(["infer", "--task", "sr_x4", "--weights", str(weights), str(image), "-o", str(out)]) == 2
    assert "use --task sr_x2" in capsys.readouterr().err
    assert main(["inspect", str(weights)]) == 0
    printed = capsys.readouterr().out
    assert "architecture:  CRAFT" in printed and "from key:      params" in printed
    assert main(["infer", str(image), "-o", str(out)]) == 2  # neither --task nor --weights
    assert "Give --task TASK" in capsys.readouterr().err


def test_python_api_loads_a_file_and_says_what_it_loaded(tmp_path, craft_x2_state):
    import restorer

    path = tmp_path / "x.pth"
    torch.save(craft_x2_state, path)
    model = restorer.load_model(weights=path, device="cpu")
    assert (model.entry.model, model.scale) == ("craft", 2) and model.weights == path
    assert str(model).startswith("CRAFT x2 (CRAFT, --model craft) from ")


def test_s2lic_released_layout_is_its_own_variant():
    """The released code drops the non-anchors' intra-slice context: 73.96 M parameters, not the
    figure's 92.65 M, and a file of either layout is detected as that layout only."""
    figure, released = zoo.get_entry("s2lic-q3", 1), zoo.get_entry("s2lic-released-q3", 1)
    counts = {}
    for entry in (figure, released):
        shapes = _shapes(entry)
        with torch.device("meta"):
            network = build_network(entry.network_options())
        counts[entry.model] = sum(p.numel() for p in network.parameters())
        width = shapes["entropy_parameters_nonanchor.0.fusion.0.weight"][1]
        assert (width == 640) == (entry is released)  # slice 0's non-anchors: hyperprior alone
        fits = {e.model for e in detect_state(_meta_signature(entry))}
        family = entry.model.rsplit("-", 1)[0]
        assert fits == {f"{family}-q{q}" for q in range(1, 7)}, entry.model
    assert round(counts["s2lic-released-q3"] / 1e6, 2) == 73.96
    assert round(counts["s2lic-q3"] / 1e6, 2) == 92.65
