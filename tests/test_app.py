"""The Gradio web demo (restorer.webapp, app.py): the `restore` API through gradio_client against the
app served on a free loopback port, the UI handler, the model cache and the error messages.

Models are conftest's tiny HATs with weights in a temporary folder (``tiny_zoo``)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import write_checkpoint

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

import restorer  # noqa: E402
from restorer import io as rio  # noqa: E402
from restorer import tasks, webapp, zoo  # noqa: E402
from restorer import weights as rw  # noqa: E402
from restorer.engine.runner import Restorer  # noqa: E402
from restorer.engine.tiling import TileSettings, count_tiles  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "restorer" / "samples"
FACE = SAMPLES / "astronaut_face.png"  # 96 x 96, 8-bit RGB
CAT16 = SAMPLES / "chelsea_16bit.png"  # 96 x 80, 16-bit RGB
CUP_ALPHA = SAMPLES / "coffee_cup_alpha.png"  # 96 x 72, 8-bit RGBA


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / mse)


@pytest.fixture
def served(tiny_zoo):
    """The app (tiny zoo) on a free loopback port; yields (WebDemo, gradio_client.Client)."""
    demo = webapp.WebDemo()
    app = webapp.build_app(demo=demo)
    app.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **webapp.launch_options(),
    )
    client = Client(app.local_url, verbose=False)
    try:
        yield demo, client
    finally:
        client.close()
        app.close()
        demo.close()


def component(app: gr.Blocks, elem_id: str):
    return next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == elem_id)


def slider_images(slider: gr.ImageSlider) -> tuple[rio.LoadedImage, rio.LoadedImage]:
    """The (before, after) images of an ImageSlider returned by a handler (Gradio's FileData pair)."""
    before, after = slider.value
    return rio.read_image(before["path"]), rio.read_image(after["path"])


def choice_values(dropdown: gr.Dropdown) -> list[str]:
    return [value for _, value in dropdown.choices]


# ---------------------------------------------------------------------------------------------------
# gradio_client against the served app
# ---------------------------------------------------------------------------------------------------


def test_restore_api_returns_the_restored_image_at_the_right_size(served):
    _, client = served
    assert "/restore" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    result = client.predict(handle_file(str(FACE)), "sr_x2", "tiny-hat", api_name="/restore")
    out = rio.read_image(result)
    src = rio.read_image(FACE)
    assert (out.width, out.height) == (2 * src.width, 2 * src.height)
    assert (out.bit_depth, out.is_gray, out.has_alpha) == (8, False, False)
    # The app is a thin shell: the same pixels as the library call, quantised once to 8 bits.
    expected, _ = restorer.load_model("sr_x2", model="tiny-hat", device="cpu").run_image(src)
    assert np.abs(out.pixels - expected).max() <= 0.5 / 255 + 1e-6


def test_restore_api_keeps_16_bit_depth_and_alpha(served):
    _, client = served
    deep = rio.read_image(client.predict(handle_file(str(CAT16)), "sr_x2", "tiny-hat", api_name="/restore"))
    assert (deep.width, deep.height, deep.bit_depth) == (192, 160, 16)
    # 16-bit for real: values between the 8-bit levels are present.
    assert np.any(np.abs(deep.pixels * 255 - np.round(deep.pixels * 255)) > 0.01)
    clear = rio.read_image(
        client.predict(handle_file(str(CUP_ALPHA)), "sr_x3", "tiny-hat", api_name="/restore")
    )
    assert (clear.width, clear.height, clear.has_alpha) == (288, 216, True)
    source_alpha = rio.read_image(CUP_ALPHA).alpha
    assert clear.alpha.min() < 0.05 and source_alpha.min() < 0.05  # transparency survived


def test_restore_api_uses_the_tasks_default_model_when_none_is_given(served):
    _, client = served
    result = Path(client.predict(handle_file(str(FACE)), "sr_x3", api_name="/restore"))  # model left out
    default = tasks.resolve("sr_x3", weights_available=rw.is_available)
    assert result.name == f"astronaut_face_sr_x3_{default.model}.png"
    assert (rio.read_image(result).width, rio.read_image(result).height) == (288, 288)


def test_bad_upload_returns_the_error_message(served, tmp_path):
    _, client = served
    garbage = tmp_path / "holiday.png"
    garbage.write_bytes(b"this is not a PNG at all")
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(garbage)), "sr_x2", "tiny-hat", api_name="/restore")
    assert str(caught.value) == "Cannot read image holiday.png: not a recognised image format"


def test_missing_weights_give_the_weights_message(served, tiny_zoo, monkeypatch):
    _, client = served
    monkeypatch.setattr(rw, "weight_dirs", lambda: [tiny_zoo])  # whatever this machine has installed
    entry = tasks.resolve("real_sr_x4")
    assert not rw.is_available(entry)
    with pytest.raises(AppError) as caught:
        client.predict(handle_file(str(FACE)), "real_sr_x4", entry.model, api_name="/restore")
    assert str(caught.value) == rw.missing_weights_message(entry)


def test_unknown_task_and_model_are_explained(served):
    _, client = served
    with pytest.raises(AppError, match="Unknown task 'sr_x9'. Tasks: sr_x2"):
        client.predict(handle_file(str(FACE)), "sr_x9", "", api_name="/restore")
    with pytest.raises(AppError, match="Model 'nope' is not available for task 'sr_x2'"):
        client.predict(handle_file(str(FACE)), "sr_x2", "nope", api_name="/restore")


def test_tile_progress_reaches_the_client(served, monkeypatch):
    _, client = served
    monkeypatch.setattr(webapp, "auto_tile", lambda device: 32)  # many tiles on a small image
    original = Restorer._forward

    def slow_forward(self, x):
        time.sleep(0.05)  # long enough per tile for a few status polls
        return original(self, x)

    monkeypatch.setattr(Restorer, "_forward", slow_forward)
    job = client.submit(handle_file(str(FACE)), "sr_x2", "tiny-hat", api_name="/restore")
    seen = []
    while not job.done():
        status = job.status()
        seen += [(u.unit, u.index, u.length) for u in status.progress_data or []]
        time.sleep(0.02)
    job.result()
    tiles = count_tiles(96, 96, TileSettings(32), zoo.get_entry("tiny-hat", 2).window_multiple)
    tile_updates = [(index, length) for unit, index, length in seen if unit == "tile"]
    assert tile_updates and all(length == tiles for _, length in tile_updates)
    assert len({index for index, _ in tile_updates}) >= 2  # it moved while the client watched


# ---------------------------------------------------------------------------------------------------
# The layout comes from the router and the zoo
# ---------------------------------------------------------------------------------------------------


def test_ui_lists_every_task_and_only_models_with_weights_default_first(tiny_zoo):
    (tiny_zoo / zoo.get_entry("hat-s", 2).weight_file).write_bytes(b"")  # present (not loaded here)
    app = webapp.build_app()
    assert choice_values(component(app, "task")) == list(tasks.TASKS)

    spec = tasks.get_task("sr_x2")
    listed = choice_values(component(app, "model"))
    assert choice_values(webapp.WebDemo().on_task_change("sr_x2")[0]) == listed  # same list on change
    present = {m for m in spec.models() if rw.is_available(spec.entry(m))}
    assert set(listed) == present and {"hat-s", "tiny-hat"} <= present
    assert listed[0] == tasks.resolve("sr_x2", weights_available=rw.is_available).model
    assert listed.index("hat-s") < listed.index("tiny-hat")  # router preference order
    absent = [m for m in spec.models() if m not in present]
    assert absent and not set(absent) & set(listed)


def test_task_without_weights_lists_no_model_and_says_what_is_missing(tiny_zoo, monkeypatch):
    monkeypatch.setattr(rw, "weight_dirs", lambda: [tiny_zoo])  # whatever this machine has installed
    entry = tasks.resolve("real_sr_x4")
    assert not rw.is_available(entry)
    dropdown, note = webapp.WebDemo().on_task_change("real_sr_x4")
    assert dropdown.choices == [] and dropdown.value is None
    assert rw.missing_weights_message(entry) in note


def test_medical_tasks_are_listed_as_command_line_only(tiny_zoo):
    labels = dict((value, label) for label, value in webapp.task_choices())
    assert "command line only" in labels["ct_denoise"]
    assert "command line only" not in labels["sr_x2"] and "command line only" not in labels["compress"]
    assert "restorer infer --task ct_denoise" in webapp.task_note("ct_denoise")
    with pytest.raises(gr.Error, match="DICOM and NIfTI .*restorer infer --task ct_denoise"):
        webapp.WebDemo().run(str(FACE), "ct_denoise")


def test_compress_over_the_api_returns_the_image_decoded_from_the_file(served):
    _, client = served
    result = client.predict(handle_file(str(FACE)), "compress", "s2lic-small-q1", api_name="/restore")
    decoded, source = rio.read_image(result), rio.read_image(FACE)
    assert (decoded.width, decoded.height) == (source.width, source.height)
    assert 18 < psnr(decoded.pixels, source.pixels) < 60  # lossy, yet the same picture


# ---------------------------------------------------------------------------------------------------
# The compression view (bundled S2LIC weights, called directly)
# ---------------------------------------------------------------------------------------------------


def _facts(markdown: str) -> dict[str, str]:
    return {
        line.split(":**")[0].removeprefix("**"): line.split(":**", 1)[1].strip()
        for line in markdown.split("  \n")
    }


def test_compress_view_shows_rate_and_quality_of_the_real_file():
    from restorer.codec.api import decompress_bytes, load_codec, read_header

    demo = webapp.WebDemo()
    assert webapp.model_choices("compress")[0][1] == "s2lic-small-q2"  # the CLI's default: best rate point
    slider, download, markdown = demo.restore_ui(
        str(FACE), "compress", "s2lic-small-q1", "auto", "cpu", "auto", None
    )
    coded = Path(download.value["path"])
    data = coded.read_bytes()
    assert coded.suffix == ".s2l" and download.label.startswith("Download ") and ".s2l" in download.label
    assert read_header(data).variant == "s2lic-small-q1"

    # The slider's right side is what the downloaded file decodes to, and its left side the original.
    before, after = slider_images(slider)
    assert slider.label == "Original | decoded from the file"
    decoded = decompress_bytes(load_codec("s2lic-small-q1"), data)
    assert np.array_equal(np.round(decoded * 255), np.round(after.pixels * 255))
    original = rio.read_image(FACE)
    assert np.array_equal(np.round(before.pixels * 255), np.round(original.pixels * 255))

    facts = _facts(markdown)
    assert float(facts["Bits per pixel"]) == pytest.approx(8 * len(data) / (96 * 96), abs=5e-4)
    assert facts["File size"].startswith(f"{len(data)} bytes")
    expected_psnr = psnr(np.round(after.pixels * 255) / 255, np.round(original.pixels * 255) / 255)
    assert float(facts["PSNR"].split()[0]) == pytest.approx(expected_psnr, abs=0.006)
    assert facts["MS-SSIM"].startswith("n/a")  # 96 px: too small for five scales
    assert "to encode" in facts["Time"] and "to decode" in facts["Time"]
    demo.close()


def test_compress_view_keeps_gray_and_says_alpha_is_not_coded(tmp_path):
    from skimage import data as skdata

    gray = tmp_path / "camera.png"
    rio.write_image(gray, skdata.camera()[:200, :200, None] / 255.0)
    demo = webapp.WebDemo()
    slider, download, markdown = demo.restore_ui(str(gray), "compress", "", "auto", "cpu", "auto", None)
    _, after = slider_images(slider)
    assert after.is_gray and (after.width, after.height) == (200, 200)
    facts = _facts(markdown)
    assert 0 < float(facts["MS-SSIM"]) <= 1  # 200 px: measured
    assert "s2lic-small-q2" in facts["Model"]  # no model chosen: the default
    assert "alpha" not in markdown

    *_, markdown = demo.restore_ui(str(CUP_ALPHA), "compress", "s2lic-small-q1", "auto", "cpu", "auto", None)
    assert "alpha is not coded" in markdown
    demo.close()


# ---------------------------------------------------------------------------------------------------
# The UI handler, limits, tiles and the model cache (called directly, no server)
# ---------------------------------------------------------------------------------------------------


def test_ui_result_slider_lines_up_and_download_is_full_precision(tiny_zoo):
    demo = webapp.WebDemo()
    slider, download, facts = demo.restore_ui(str(CAT16), "sr_x2", "tiny-hat", "auto", "cpu", "auto", None)
    before_img, after_img = slider_images(slider)
    assert slider.label == "Before (bicubic) | after"
    full = rio.read_image(download.value["path"])  # a DownloadButton holds Gradio's FileData
    assert (before_img.width, before_img.height) == (after_img.width, after_img.height) == (192, 160)
    assert (before_img.bit_depth, after_img.bit_depth, full.bit_depth) == (8, 8, 16)
    assert download.visible and "16-bit PNG" in download.label
    # "before" is the upload upscaled with bicubic, so it matches the input at the input's size.
    source = rio.read_image(CAT16).pixels
    assert psnr(webapp.resize_bicubic(before_img.pixels, 96, 80), source) > 30
    for text in ("96 x 80 px, 16-bit RGB", "192 x 160 px, 16-bit RGB", "Tiny HAT", "cpu (float32)", " s"):
        assert text in facts
    demo.close()
    assert not demo.work_dir.exists()


def test_oversize_upload_is_refused_with_the_limit(tiny_zoo):
    demo = webapp.WebDemo(max_pixels=96 * 96 - 1)
    with pytest.raises(gr.Error) as caught:
        demo.run(str(FACE), "sr_x2", "tiny-hat")
    message = caught.value.message
    assert "astronaut_face.png is 96 x 96" in message and "--max-pixels" in message
    assert len(demo.models) == 0  # refused before any model was loaded
    webapp.WebDemo(max_pixels=96 * 96).run(str(FACE), "sr_x2", "tiny-hat")  # exactly at the limit: fine


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` but holds no pixel data (a decompression-bomb stand-in)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def test_oversize_is_refused_from_the_header_before_decoding(tiny_zoo, tmp_path):
    demo = webapp.WebDemo()  # default limit, about 2 megapixels
    # No pixel data: decoding would fail, so the size message proves the check came first.
    with pytest.raises(gr.Error, match="big.png is 3000 x 3000 = 9.00 megapixels"):
        demo.run(str(png_header_only(tmp_path / "big.png", 3000, 3000)), "sr_x2", "tiny-hat")
    with pytest.raises(gr.Error, match="bomb.png declares more than .* decompression bomb"):
        demo.run(str(png_header_only(tmp_path / "bomb.png", 40000, 40000)), "sr_x2", "tiny-hat")


def test_an_upload_that_cannot_fit_in_memory_is_refused_before_a_model_runs(tiny_zoo, monkeypatch):
    from restorer.engine import budget

    demo = webapp.WebDemo()
    # FACE is 96 x 96: within the pixel limit, but x2 needs ~1.3 MB and only 64 kB are "available"
    monkeypatch.setattr(budget, "available_memory", lambda: 64 << 10)
    with pytest.raises(gr.Error, match="astronaut_face: a 96 x 96 image at x2 .* needs about"):
        demo.run(str(FACE), "sr_x2", "tiny-hat")
    assert len(demo.models) == 0  # refused before any model was loaded


def test_a_webp_bomb_is_refused_from_its_riff_header(tiny_zoo, tmp_path, monkeypatch):
    """Pillow's WebP open allocates the declared canvas: the size must come from the header instead."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "WEBP", lossless=True)
    data = bytearray(buffer.getvalue())
    data[21:25] = ((int.from_bytes(data[21:25], "little") & ~0xFFFFFFF) | 16382 | (16382 << 14)).to_bytes(
        4, "little"
    )  # VP8L: 16383 x 16383
    (tmp_path / "bomb.webp").write_bytes(bytes(data))

    def no_pillow(*args, **kwargs):
        raise AssertionError("Pillow opened the WebP bomb")

    monkeypatch.setattr(Image, "open", no_pillow)
    with pytest.raises(gr.Error, match="bomb.webp declares more than .* decompression bomb"):
        webapp.WebDemo().run(str(tmp_path / "bomb.webp"), "sr_x2", "tiny-hat")


def test_no_upload_and_bad_tile_size_are_explained(tiny_zoo):
    demo = webapp.WebDemo()
    with pytest.raises(gr.Error, match="No image"):
        demo.run(None, "sr_x2", "tiny-hat")
    with pytest.raises(gr.Error, match="Tile size must be"):
        demo.run(str(FACE), "sr_x2", "tiny-hat", tile="big")


def test_tile_size_from_the_advanced_settings_is_used(tiny_zoo):
    demo = webapp.WebDemo()
    *_, whole = demo.restore_ui(str(FACE), "sr_x2", "tiny-hat", "0", "cpu", "fp32", None)
    *_, tiled = demo.restore_ui(str(FACE), "sr_x2", "tiny-hat", "32", "cpu", "fp32", None)
    assert "whole image" in whole
    tiles = count_tiles(96, 96, TileSettings(32), zoo.get_entry("tiny-hat", 2).window_multiple)
    assert tiles > 1 and f"32 px tiles, {tiles} per pass" in tiled


def test_model_cache_keeps_one_instance_per_model_device_and_precision(tiny_zoo):
    demo = webapp.WebDemo(cache_capacity=2)
    entry = zoo.get_entry("tiny-hat", 2)
    first = demo.models.get(entry, "cpu", "fp32")
    demo.run(str(FACE), "sr_x2", "tiny-hat", device="auto", precision="auto")  # resolves to cpu/fp32
    assert len(demo.models) == 1 and demo.models.get(entry, "cpu", "auto") is first
    bf16 = demo.models.get(entry, "cpu", "bf16")
    assert bf16 is not first and len(demo.models) == 2
    other_scale = demo.models.get(zoo.get_entry("tiny-hat", 3), "cpu", "fp32")
    assert other_scale.scale == 3 and len(demo.models) == 2  # capacity 2: least recently used dropped
    assert demo.models.get(entry, "cpu", "bf16") is bf16  # used more recently than `first`
    assert demo.models.get(entry, "cpu", "fp32") is not first  # `first` was dropped and is rebuilt


def test_replaced_weight_file_is_loaded_afresh(tiny_zoo):
    demo = webapp.WebDemo()
    entry = zoo.get_entry("tiny-hat", 2)
    first = demo.models.get(entry, "cpu", "fp32")
    path = tiny_zoo / entry.weight_file
    write_checkpoint(entry, path, seed=99)
    os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 10**9))
    assert demo.models.get(entry, "cpu", "fp32") is not first


def test_tile_progress_moves_forward_across_passes():
    bar = webapp._TileBar(tiles_per_pass=4, passes=2, desc="test")
    for _ in range(2):  # colour pass, then the alpha pass restarts the runner's count
        for done in range(1, 5):
            bar(done, 4)
    assert bar.bar.n == 8 == bar.total
    bar(4, 4)  # a retry beyond the estimate never runs past the total
    assert bar.bar.n == 8
    bar.close()


# ---------------------------------------------------------------------------------------------------
# app.py
# ---------------------------------------------------------------------------------------------------


def _load_app_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("restorer_app_script", ROOT / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_app_arguments():
    app_script = _load_app_module()
    args = app_script.parse_args([])
    assert (args.host, args.port, args.share, args.max_pixels) == ("127.0.0.1", 7860, False, None)
    args = app_script.parse_args(["--host", "0.0.0.0", "--port", "8000", "--share", "--max-pixels", "1000"])
    assert (args.host, args.port, args.share, args.max_pixels) == ("0.0.0.0", 8000, True, 1000)
    with pytest.raises(SystemExit):
        app_script.parse_args(["--max-pixels", "0"])
    # The help text states the real default (app.py does not import the app to keep --help fast).
    help_text = " ".join(app_script.build_parser().format_help().split())
    assert f"default {webapp.DEFAULT_MAX_PIXELS}," in help_text


def test_python_app_py_serves_the_restore_endpoint(tmp_path):
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {
        **os.environ,
        "RESTORER_WEIGHTS_DIR": str(tmp_path),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "TMPDIR": str(temp),  # where the app keeps its results
    }
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "--port", str(port), "--max-pixels", "5000"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300  # a loaded CI machine can take minutes to import torch
        client = None
        while client is None:
            if process.poll() is not None:
                pytest.fail(f"app.py exited with {process.returncode}:\n{process.stdout.read()}")
            if time.monotonic() > deadline:
                pytest.fail("app.py did not start serving within 300 s")
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                time.sleep(0.5)
        assert "/restore" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        # --max-pixels reached the app: a 96 x 96 upload is refused by the limit, not by a model.
        with pytest.raises(AppError, match=r"\(5000 pixels, set with"):
            client.predict(handle_file(str(FACE)), "sr_x2", "", api_name="/restore")
        client.close()
        assert list(temp.glob("restorer-webapp-*"))  # the result folder exists while it runs
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0  # SIGTERM ends it normally...
    assert not list(temp.glob("restorer-webapp-*"))  # ...and its result folder is removed


def test_malformed_api_arguments_are_a_message_not_a_traceback(served, tmp_path):
    _, client = served
    photo = tmp_path / "p.png"
    rio.write_image(photo, np.random.default_rng(0).random((16, 16, 3), dtype=np.float32))
    for task, model, expected in (
        ({"name": "sr_x2"}, "tiny-hat", "task must be text"),
        ("sr_x2", ["tiny-hat"], "model must be text"),
        (7, None, "task must be text"),
    ):
        with pytest.raises(AppError) as caught:
            client.predict(handle_file(str(photo)), task, model, api_name="/restore")
        assert expected in str(caught.value) and "AttributeError" not in str(caught.value)
