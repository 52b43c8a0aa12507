"""`restorer export` to ONNX and the ONNX Runtime backend of `restorer infer` (issue 17, "Export").

Tiny random-initialised configurations of every exportable architecture: ONNX Runtime must reproduce
PyTorch within 1e-4 (fp32) on random inputs, at the exported size and, for any-size graphs, at others;
an exported file must run through `restorer infer` with the same tiling as the PyTorch backend and give
the same image. The export-only forms of a few operations are checked against their eager forms.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np
import pytest
import torch

from restorer import zoo
from restorer.archs import build_network
from restorer.cli import main

from conftest import TINY_HAT, TINY_RRFORMER, TINY_RWKV, image_preserving_

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from restorer.engine.onnx_runner import OnnxModel, build_onnx_restorer, resolve_backend  # noqa: E402
from restorer.engine.runner import build_restorer  # noqa: E402
from restorer.export import TOLERANCE, ExportError, OnnxInfo, export_onnx, read_info  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Tiny networks (x2 unless scale 1) and their padding multiples. HAT and DRCT have two blocks, so the
# shifted-window path (masks, four window groups) is in the graph; CRAFT has 32 channels, so its
# DynamicPosBias has a 1-wide hidden layer as the published models do (narrower gives LayerNorm(0)).
TINY = {
    "HAT": ({**TINY_HAT, "depths": [2], "num_heads": [2], "upscale": 2}, 8, "hat-s"),
    "DRCT": (
        {
            "type": "DRCT",
            "img_size": 64,
            "window_size": 8,
            "depths": [2],
            "embed_dim": 12,
            "num_heads": [2],
            "gc": 4,
            "mlp_ratio": 2,
            "upsampler": "pixelshuffle",
            "resi_connection": "1conv",
            "upscale": 2,
        },
        8,
        "drct",
    ),
    "CRAFT": (
        {
            "type": "CRAFT",
            "upscale": 2,
            "window_size": 4,
            "depths": [1],
            "embed_dim": 32,
            "num_heads": [4],
            "split_size_0": 2,
            "split_size_1": 4,
            "mlp_ratio": 2,
            "resi_connection": "1conv",
        },
        4,
        "craft",
    ),
    "DLGSANet": (
        {
            "type": "DLGSANet",
            "dim": 12,
            "groups": 1,
            "blocks": 1,
            "idynamic_num_heads": 6,
            "restormer_num_heads": 2,
            "tlc_flag": True,
            "tlc_kernel": 24,  # smaller than the 32 px tile: several overlapping TLC windows are traced
            "upsampler": "pixelshuffledirect",
            "upscale": 2,
        },
        1,
        "dlgsanet-light",
    ),
    "RRFormer": (
        {**dict(zoo.get_entry("rrformer", 1).network_options()), **TINY_RRFORMER},
        32,
        "rrformer",
    ),
}
DYNAMIC = {"HAT": True, "DRCT": True, "CRAFT": True, "DLGSANet": False, "RRFormer": True}


def _tiny(arch: str, seed: int = 0) -> tuple[torch.nn.Module, zoo.ZooEntry]:
    network_g, multiple, base = TINY[arch]
    scale = network_g.get("upscale", 1)
    entry = dataclasses.replace(
        zoo.get_entry(base, scale),
        model=f"tiny-{arch.lower()}",
        display_name=f"Tiny {arch}",
        network_g=zoo._freeze(network_g),
        weight_file=f"tiny-{arch.lower()}_x{scale}.pth",
        window_multiple=multiple,
        sha256=None,
    )
    torch.manual_seed(seed)
    net = build_network(entry.network_options())
    if scale > 1:
        net = image_preserving_(net, body_gain=0.5)  # a picture-like output with a real residual
    if hasattr(net, "pad_mode"):
        net.pad_mode = entry.pad_mode
    return net.eval(), entry


def _ort(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return net(x).numpy()


@pytest.mark.parametrize("arch", sorted(TINY))
def test_onnx_runtime_matches_pytorch(arch, tmp_path):
    net, entry = _tiny(arch)
    tile = 64 if arch == "RRFormer" else 32
    result = export_onnx(net, entry, tmp_path / "m.onnx", tile=tile)
    info = read_info(result.path)
    assert info.dynamic == DYNAMIC[arch], result.fixed_reason
    assert (info.scale, info.in_channels, info.window_multiple) == (entry.scale, 3, entry.window_multiple)
    assert info.tile == (0 if DYNAMIC[arch] else tile)
    assert result.max_abs_diff <= TOLERANCE

    # Fresh inputs, independently of the export's own check: the traced size, and for any-size graphs a
    # non-square size with other window counts than the traced one.
    session = _ort(result.path)
    m = entry.window_multiple
    sizes = [(tile, tile)] + ([(2 * m + tile, tile - m)] if info.dynamic else [])
    gen = torch.Generator().manual_seed(7)
    outputs = []
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=gen)
        got = session.run(None, {"input": x.numpy()})[0]
        expected = _torch(net, x)
        assert got.shape == (1, 3, h * entry.scale, w * entry.scale)
        assert np.abs(got - expected).max() <= TOLERANCE
        outputs.append(got)
    # the graph is not a constant: another input gives another output
    other = session.run(None, {"input": torch.rand(1, 3, tile, tile, generator=gen).numpy()})[0]
    assert np.abs(other - outputs[0]).max() > 10 * TOLERANCE


def test_fixed_tile_graph_rejects_other_sizes(tmp_path):
    net, entry = _tiny("DLGSANet")
    result = export_onnx(net, entry, tmp_path / "m.onnx", tile=32)
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # the input size is part of the graph
        _ort(result.path).run(None, {"input": np.zeros((1, 3, 40, 32), np.float32)})
    with pytest.raises(ExportError, match="any input size"):
        export_onnx(net, entry, tmp_path / "d.onnx", tile=32, shape="dynamic")
    assert not (tmp_path / "d.onnx").exists()


def test_shape_fixed_is_honoured_and_tile_rounded_to_the_window(tmp_path):
    net, entry = _tiny("HAT")
    result = export_onnx(net, entry, tmp_path / "m.onnx", tile=30, shape="fixed")
    assert result.info.tile == 32  # rounded up to the 8 px window multiple
    x = torch.rand(1, 3, 32, 32)
    got = _ort(result.path).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - _torch(net, x)).max() <= TOLERANCE


@pytest.mark.slow
def test_restore_rwkv_exports_for_a_fixed_tile(tmp_path):
    """Restore-RWKV's WKV scan has no ONNX operator for logcumsumexp; the export form is a log-domain scan.
    About a minute: the exporter is slow on the scan's graph."""
    torch.manual_seed(0)
    net = build_network({"type": "Restore_RWKV", "inp_channels": 3, "out_channels": 3, **TINY_RWKV}).eval()
    entry = zoo.get_entry("restore-rwkv-light", 1)
    result = export_onnx(net, entry, tmp_path / "rwkv.onnx", tile=16)
    assert result.info.tile == 16 and "WKV" in result.fixed_reason
    x = torch.rand(1, 3, 16, 16)
    got = _ort(result.path).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - _torch(net, x)).max() <= TOLERANCE
    assert np.abs(got - x.numpy()).max() > 1e-3  # not just the global residual


# ---------------------------------------------------------------------------------------------------
# Export forms of operations (each against its eager form)
# ---------------------------------------------------------------------------------------------------


def test_logcumsumexp_export_form_matches_torch(monkeypatch):
    from restorer.ops import wkv

    gen = torch.Generator().manual_seed(0)
    # spreads like the carries' (chunk index times w L) and far beyond float range: e^800 overflows
    x = (torch.randn(2, 3, 37, generator=gen, dtype=torch.float64) * 300).cumsum(-1)
    expected = torch.logcumsumexp(x, -1)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    got = wkv._logcumsumexp(x, -1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)
    got_dim1 = wkv._logcumsumexp(x.transpose(1, 2), 1)
    torch.testing.assert_close(got_dim1, expected.transpose(1, 2), rtol=1e-12, atol=1e-9)


def test_dynamic_conv_export_form_matches_eager(monkeypatch):
    from restorer.ops import idynamic_dwconv

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 6, 9, 11, generator=gen)
    weight = torch.randn(1, 2, 3, 3, 9, 11, generator=gen)
    bias = torch.randn(6, generator=gen)
    expected = idynamic_dwconv(x, weight, bias, padding=1)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    got = idynamic_dwconv(x, weight, bias, padding=1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_hat_overlapping_windows_gather_equals_unfold():
    from restorer.archs.hat_arch import _overlapping_windows_gathered

    kv = torch.randn(2, 20, 28, 5)  # padded map (B, Hp, Wp, C): 2 x 3 windows of 8, 12 px key windows
    expected = kv.unfold(1, 12, 8).unfold(2, 12, 8).permute(0, 1, 2, 4, 5, 3)
    assert torch.equal(_overlapping_windows_gathered(kv, 2, 3, 12, 8), expected)


def test_concrete_shapes_are_undone_after_an_error():
    from restorer.export import _concrete_shapes

    with pytest.raises(RuntimeError), _concrete_shapes():
        assert "shape" in torch.Tensor.__dict__
        raise RuntimeError("boom")
    assert not {"shape", "size", "numel"} & set(torch.Tensor.__dict__)


# ---------------------------------------------------------------------------------------------------
# The engine and the command line
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def onnx_zoo(monkeypatch, tmp_path):
    """'tiny-hat' (any-size graph) and 'tiny-dlgsanet' (fixed-tile graph) for sr_x2, weights on disk."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    extra = {}
    for arch in ("HAT", "DLGSANet"):
        net, entry = _tiny(arch, seed=3)
        torch.save({entry.param_key: net.state_dict()}, weights_dir / entry.weight_file)
        extra[entry.key] = entry
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({**extra, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return weights_dir


def _write_png16(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), (rgb.astype(np.uint16) * 257)[..., ::-1])
    return path


def _read16(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float64) / 65535


@pytest.mark.parametrize(
    ("model", "export_args", "infer_tile"),
    [
        ("tiny-hat", ["--tile", "32"], ["-t", "32"]),  # any-size graph, the engine's 32 px tiles
        ("tiny-dlgsanet", ["--tile", "32"], []),  # fixed 32 px graph: the file sets the tile
    ],
)
def test_exported_file_runs_through_infer_like_pytorch(
    onnx_zoo, tmp_path, rgb_image, capsys, model, export_args, infer_tile
):
    onnx_path = tmp_path / f"{model}.onnx"
    code = main(
        ["export", "--model", model, "--scale", "2", "--format", "onnx", "-o", str(onnx_path), *export_args]
    )
    assert code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert ("fixed 32x32 tiles" in said) == (model == "tiny-dlgsanet")
    photo = _write_png16(tmp_path / "photo.png", rgb_image)  # 48x56: several 32 px tiles
    ort_dir, torch_dir = tmp_path / "ort", tmp_path / "torch"
    code = main(["infer", "--weights", str(onnx_path), str(photo), "-o", str(ort_dir), "-q", *infer_tile])
    assert code == 0, capsys.readouterr().err
    code = main(["infer", "--task", "sr_x2", "-m", model, str(photo), "-o", str(torch_dir), "-q", "-t", "32"])
    assert code == 0
    from_ort, from_torch = _read16(ort_dir / "photo_out.png"), _read16(torch_dir / "photo_out.png")
    assert from_ort.shape == from_torch.shape == (96, 112, 3)
    assert np.abs(from_ort - from_torch).max() <= 2 / 65535  # 16-bit rounding of ~1e-6 differences
    nearest = np.repeat(np.repeat(rgb_image[..., ::-1].astype(np.float64) / 255, 2, 0), 2, 1)
    assert np.abs(from_ort - nearest).mean() > 1e-3  # the network's residual is there, not only the copy


def test_engine_tiles_with_the_onnx_file_as_with_pytorch(onnx_zoo, tmp_path):
    """Float outputs of the whole engine (tiling, feathering, gray input, TTA) for both backends."""
    net, entry = _tiny("HAT", seed=3)
    path = export_onnx(net, entry, tmp_path / "hat.onnx", tile=32).path
    pixels = np.random.default_rng(0).random((45, 70, 3), dtype=np.float32)
    for tile, tta in ((32, False), (0, False), (32, True)):
        with_torch = build_restorer(entry, device="cpu", tile=tile, tta=tta)
        with_ort = build_onnx_restorer(path, device="cpu", tile=tile, tta=tta)
        assert with_ort.tile_count(45, 70) == with_torch.tile_count(45, 70)
        expected = with_torch.run_array(pixels)
        got = with_ort.run_array(pixels)
        assert got.shape == expected.shape == (90, 140, 3)
        assert np.abs(got - expected).max() <= TOLERANCE, (tile, tta)
    gray = pixels[..., :1]
    assert np.abs(with_ort.run_array(gray) - with_torch.run_array(gray)).max() <= TOLERANCE


def test_fixed_tile_file_pads_small_images_and_refuses_other_tiles(onnx_zoo, tmp_path, rgb_image, capsys):
    net, entry = _tiny("DLGSANet", seed=3)
    path = export_onnx(net, entry, tmp_path / "dl.onnx", tile=32).path
    restorer = build_onnx_restorer(path, device="cpu")
    assert restorer.tile.tile == 32
    small = np.random.default_rng(1).random((20, 27, 3), dtype=np.float32)
    out = restorer.run_array(small)  # padded to 32x32 inside, cropped back
    assert out.shape == (40, 54, 3)
    # only the context beyond the border differs from PyTorch's whole-image run
    assert np.abs(out - build_restorer(entry, device="cpu", tile=0).run_array(small)).mean() < 0.05
    assert isinstance(restorer.model, OnnxModel)
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), rgb_image)
    code = main(["infer", "--weights", str(path), str(photo), "-o", str(tmp_path / "o"), "-t", "64"])
    err = capsys.readouterr().err
    assert code == 2 and "exported for 32-pixel tiles" in err and "Traceback" not in err


def test_export_weights_file_without_model_is_recognised(onnx_zoo, tmp_path, capsys):
    weights = onnx_zoo / "tiny-hat_x2.pth"
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "-o", str(out), "--tile", "32"]) == 0
    captured = capsys.readouterr()
    assert "is Tiny HAT x2 (--model tiny-hat)" in captured.err
    info = read_info(out)
    assert (info.model, info.scale, info.weights, info.tasks) == (
        "tiny-hat",
        2,
        "tiny-hat_x2.pth",
        ("sr_x2",),
    )
    # an existing output is kept unless --overwrite
    assert main(["export", "--weights", str(weights), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_python_api_loads_an_onnx_file(onnx_zoo, tmp_path):
    import restorer

    net, entry = _tiny("HAT", seed=3)
    path = export_onnx(net, entry, tmp_path / "hat.onnx", tile=32).path
    model = restorer.load_model(weights=path, device="cpu")
    assert isinstance(model.model, OnnxModel) and model.scale == 2
    assert model.run_array(np.zeros((16, 24, 3), np.float32)).shape == (32, 48, 3)
    with pytest.raises(restorer.errors.UsageError, match="does not serve --task sr_x4"):
        restorer.load_model("sr_x4", weights=path)


def test_codec_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "codec.onnx"
    code = main(["export", "--model", "s2lic-small-q1", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ") and err.count("\n") == 1 and "codec" in err
    assert not out.exists()


def test_missing_onnx_says_what_to_install(tmp_path, capsys, monkeypatch, rgb_image):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    code = main(["export", "--task", "sr_x2", "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and 'pip install -e ".[export]"' in err
    (tmp_path / "m.onnx").write_bytes(b"")
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), rgb_image)
    code = main(["infer", "--weights", str(tmp_path / "m.onnx"), str(photo), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install -e ".[export]"' in err and "Traceback" not in err


def test_foreign_onnx_file_and_backend_mismatch_are_usage_errors(tmp_path, capsys, rgb_image):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "plain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    photo = tmp_path / "p.png"
    cv2.imwrite(str(photo), rgb_image)
    code = main(["infer", "--weights", str(foreign), str(photo), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no restorer metadata" in err
    code = main(["infer", "--backend", "torch", "--weights", str(foreign), str(photo), "-o", str(tmp_path)])
    assert code == 2 and "--backend onnxruntime" in capsys.readouterr().err
    assert resolve_backend("auto", "x.pth") == "torch" and resolve_backend("auto", "x.ONNX") == "onnxruntime"
    with pytest.raises(Exception, match="give --weights MODEL.onnx"):
        resolve_backend("onnxruntime", "x.pth")


def test_metadata_round_trip():
    _, entry = _tiny("DLGSANet")
    info = OnnxInfo.from_entry(entry, 32, "w.pth")
    back = OnnxInfo.from_props(info.to_props())
    assert back == info
    assert back.entry().window_multiple == entry.window_multiple and back.entry().cpu_tile == 32
