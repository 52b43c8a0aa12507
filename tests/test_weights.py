"""Weight files: reading, unwrapping, strict loading with useful errors, downloading."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from safetensors.torch import save_file

from restorer import weights as rw
from restorer.archs import build_network
from restorer.errors import CheckpointError, WeightsNotFoundError

from conftest import tiny_entry, write_checkpoint


def _tiny_state(scale=2, seed=0):
    torch.manual_seed(seed)
    return build_network(tiny_entry(scale).network_options()).state_dict()


def test_unwrap_prefers_params_ema_then_params_and_strips_module():
    ema, raw = _tiny_state(seed=1), _tiny_state(seed=2)
    key = "conv_first.weight"
    assert torch.equal(rw.unwrap_state_dict({"params": raw, "params_ema": ema})[key], ema[key])
    assert torch.equal(rw.unwrap_state_dict({"params": raw, "params_ema": ema}, "params")[key], raw[key])
    assert torch.equal(rw.unwrap_state_dict({"params": raw})[key], raw[key])  # BasicSR's fallback
    wrapped = {"state_dict": {f"module.{k}": v for k, v in raw.items()}}
    assert torch.equal(rw.unwrap_state_dict(wrapped)[key], raw[key])
    assert torch.equal(rw.unwrap_state_dict(raw)[key], raw[key])  # bare dict
    public_rrformer = {"icnn": raw, "opt_g": {"state": {}}, "epoch": 20}
    assert torch.equal(rw.unwrap_state_dict(public_rrformer)[key], raw[key])
    with pytest.raises(CheckpointError, match="no tensors"):
        rw.unwrap_state_dict({"params": {"a": 1}})


@pytest.mark.parametrize("fmt", ["pth_ema", "pth_params", "safetensors", "bare"])
def test_load_checkpoint_strict_round_trip(tmp_path, fmt):
    entry = tiny_entry(3)
    source = build_network(entry.network_options())
    state = source.state_dict()
    path = tmp_path / ("w.safetensors" if fmt == "safetensors" else "w.pth")
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "bare":
        torch.save(state, path)
    else:
        torch.save({"params_ema" if fmt == "pth_ema" else "params": state}, path)
    target = build_network(entry.network_options())
    rw.load_checkpoint(target, path, entry)
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        torch.testing.assert_close(target.eval()(x), source.eval()(x), rtol=0, atol=0)


def test_mismatch_names_keys_and_the_variant_that_fits(tiny_zoo, tmp_path):
    x2 = tiny_entry(2)
    path = write_checkpoint(x2, tmp_path / "x2.pth")
    x4 = tiny_entry(4)
    model = build_network(x4.network_options())
    with pytest.raises(CheckpointError) as info:
        rw.load_checkpoint(model, path, x4)
    message = str(info.value)
    assert "does not fit Tiny HAT" in message
    assert "upsample.2.weight" in message  # x4 has a second pixel-shuffle stage
    assert "--model tiny-hat (x2)" in message


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read weight file"):
        rw.read_checkpoint(bad)


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"params": Evil()}, path)
    with pytest.raises(CheckpointError):
        rw.read_checkpoint(path)


def test_find_weights_by_any_suffix(tmp_path, monkeypatch):
    entry = tiny_entry(2)
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(tmp_path))
    assert rw.find_weights(entry) is None
    with pytest.raises(WeightsNotFoundError, match=entry.weight_file):
        rw.require_weights(entry)
    (tmp_path / "tiny-hat_x2.safetensors").write_bytes(b"")
    assert rw.find_weights(entry) == tmp_path / "tiny-hat_x2.safetensors"
    with pytest.raises(WeightsNotFoundError, match="not found"):
        rw.require_weights(entry, tmp_path / "nope.pth")


def test_download_checks_sha256_and_is_atomic(tmp_path):
    source = write_checkpoint(tiny_entry(2), tmp_path / "published.pth")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = dataclasses.replace(tiny_entry(2), url=source.as_uri(), sha256=digest)
    dest = tmp_path / "dl"
    path = rw.download(entry, dest, progress=False)
    assert path.read_bytes() == source.read_bytes()
    bad = dataclasses.replace(entry, sha256="0" * 64, weight_file="other.pth")
    with pytest.raises(CheckpointError, match="sha256"):
        rw.download(bad, dest, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["tiny-hat_x2.pth"]  # nothing partial left


def test_download_without_direct_link_says_where_to_get_it():
    from restorer import zoo

    with pytest.raises(WeightsNotFoundError, match="drive.google.com"):
        rw.download(zoo.get_entry("hat", 4))


def _fake_vgg19(tmp_path, monkeypatch, prefix_of=None):
    """Registers a 'vgg19' published at a file:// URL; the prefix is the real file's unless overridden."""
    source = tmp_path / "published" / "vgg19-dcbb9e9d.pth"
    source.parent.mkdir()
    torch.save({"features.0.weight": torch.randn(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    aux = dataclasses.replace(
        rw.AUXILIARY_WEIGHTS["vgg19"], url=source.as_uri(), sha256_prefix=prefix_of or digest[:8]
    )
    monkeypatch.setattr(rw, "AUXILIARY_WEIGHTS", {"vgg19": aux})
    return source


def test_weights_download_vgg19_checks_the_published_hash_prefix(tmp_path, monkeypatch, capsys):
    from restorer.cli import main

    assert rw.AUXILIARY_WEIGHTS["vgg19"].sha256_prefix == "dcbb9e9d"  # torchvision's file name says so
    source = _fake_vgg19(tmp_path, monkeypatch)
    dest = tmp_path / "weights"
    assert main(["weights", "download", "vgg19", "--dir", str(dest)]) == 0
    assert (dest / "vgg19-dcbb9e9d.pth").read_bytes() == source.read_bytes()
    assert "Saved" in capsys.readouterr().out
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(dest))
    assert rw.find_auxiliary("vgg19") == dest / "vgg19-dcbb9e9d.pth"

    (tmp_path / "again").mkdir()
    _fake_vgg19(tmp_path / "again", monkeypatch, prefix_of="00000000")
    other = tmp_path / "other"
    assert main(["weights", "download", "vgg19", "--dir", str(other)]) == 1
    assert "not 00000000" in capsys.readouterr().err
    assert list(other.iterdir()) == []  # nothing partial left
    assert main(["weights", "download", "vgg19", "--scale", "2"]) == 2


def test_weights_list_names_the_auxiliary_files(capsys):
    from restorer.cli import main

    assert main(["weights", "list"]) == 0
    assert "vgg19-dcbb9e9d.pth" in capsys.readouterr().out


def test_weights_init_rrformer_needs_no_vgg19_file(tmp_path, monkeypatch):
    from restorer import zoo
    from restorer.cli import main

    monkeypatch.setattr(rw, "weight_dirs", lambda: [tmp_path / "empty"])  # no VGG19 anywhere
    out = tmp_path / "rrformer_random.pth"
    assert main(["weights", "init", "rrformer", "--scale", "1", "-o", str(out)]) == 0
    options = {**zoo.get_entry("rrformer", 1).network_options(), "vgg_weights": "random"}
    state = rw.unwrap_state_dict(rw.read_checkpoint(out), "params")
    build_network(options).load_state_dict(state, strict=True)


def test_save_safetensors_is_atomic_and_keeps_metadata(tmp_path, monkeypatch):
    from safetensors import safe_open

    from restorer import io as rio

    target = tmp_path / "out" / "model.safetensors"
    rw.save_safetensors({"w": torch.ones(2, 3)}, target, {"recipe": "options/train/x.yml", "iterations": "7"})
    with safe_open(str(target), "pt") as handle:
        assert handle.metadata()["iterations"] == "7" and torch.equal(
            handle.get_tensor("w"), torch.ones(2, 3)
        )
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    before = target.read_bytes()

    def interrupted(*args):
        raise KeyboardInterrupt  # the write is cut after the new bytes went to the temporary file

    monkeypatch.setattr(rio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rw.save_safetensors({"w": torch.zeros(5)}, target, {"iterations": "8"})
    assert target.read_bytes() == before  # the old file stays, and no temporary file is left
    assert [p.name for p in target.parent.iterdir()] == ["model.safetensors"]


def test_training_iteration_reads_the_name_or_the_newest_state(tmp_path):
    models, states = tmp_path / "run" / "models", tmp_path / "run" / "training_states"
    models.mkdir(parents=True)
    states.mkdir()
    assert rw.training_iteration(models / "net_g_1500.pth") == "1500"
    assert rw.training_iteration(models / "net_g_latest.pth") == "latest"
    for n in (500, 3000, 1000):
        (states / f"{n}.state").write_bytes(b"")
    assert rw.training_iteration(models / "net_g_latest.pth") == "3000"
