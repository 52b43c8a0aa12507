"""Task router and zoo: the single source of truth for tasks and variants."""

from __future__ import annotations

import pytest

from restorer import tasks, zoo
from restorer.errors import UsageError


def test_every_sr_task_lists_hat_variants_at_its_scale():
    for scale in (2, 3, 4):
        spec = tasks.get_task(f"sr_x{scale}")
        assert spec.kind == "image" and spec.scale == scale
        assert set(spec.models()) >= {"hat-s", "hat", "hat-l"}
        for name in spec.models():
            entry = spec.entry(name)
            assert entry.scale == scale and entry.network_g["upscale"] == scale
    real = tasks.get_task("real_sr_x4")
    assert real.models()[0] == "real-hat-gan"


def test_official_hyperparameters_in_the_zoo():
    hat_s = zoo.get_entry("hat-s", 4).network_g
    assert (hat_s["embed_dim"], hat_s["compress_ratio"], hat_s["squeeze_factor"]) == (144, 24, 24)
    hat_l = zoo.get_entry("hat-l", 2).network_g
    assert len(hat_l["depths"]) == 12 and hat_l["embed_dim"] == 180
    assert zoo.get_entry("real-hat-gan", 4).weight_file == "Real_HAT_GAN_SRx4.pth"
    assert all(e.param_key == "params_ema" for e in zoo.entries(arch="HAT"))


def test_zoo_entries_are_immutable_and_copies_are_fresh():
    entry = zoo.get_entry("hat", 2)
    options = entry.network_options()
    options["depths"].append(99)
    assert len(entry.network_options()["depths"]) == 6
    with pytest.raises(TypeError):
        entry.network_g["embed_dim"] = 1  # type: ignore[index]


def test_router_default_prefers_available_weights():
    def available(entry):
        return entry.model == "hat-s"

    assert tasks.resolve("sr_x3", weights_available=available).model == "hat-s"
    assert tasks.resolve("sr_x3", weights_available=lambda e: False).model == "drct-l"
    assert tasks.resolve("SR_X2", "HAT").display_name == "HAT"


def test_router_errors_are_usage_errors():
    with pytest.raises(UsageError, match="Unknown task"):
        tasks.get_task("deblur")
    with pytest.raises(UsageError, match="not available for task 'real_sr_x4'"):
        tasks.resolve("real_sr_x4", "hat-s")


def test_basicsr_imports_through_the_compat_step():
    from restorer._compat import ensure_basicsr_importable

    ensure_basicsr_importable()
    import basicsr  # noqa: F401
    from basicsr.metrics import calculate_psnr  # noqa: F401

    from restorer.training.archs import register_in_basicsr

    assert "HAT" in register_in_basicsr()  # training's bridge: restorer's archs in BasicSR's registry
