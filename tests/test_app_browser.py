"""The web demo in a real headless browser: Playwright driving Debian's Chromium.

Playwright cannot download its own browser without internet access, so this uses the system
Chromium (``.ci/install-browser.sh`` installs it; ``RESTORER_CHROMIUM`` points elsewhere). Without it
the tests are skipped with the reason. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"
FACE = ROOT / "restorer" / "samples" / "astronaut_face.png"  # 96 x 96
CHROMIUM = Path(os.environ.get("RESTORER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
]

if not CHROMIUM.is_file():
    pytest.skip(
        f"Chromium not found at {CHROMIUM}: run .ci/install-browser.sh (apt-get install chromium) "
        "or set RESTORER_CHROMIUM",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

from restorer import io as rio  # noqa: E402
from restorer import tasks, webapp  # noqa: E402
from restorer import weights as rw  # noqa: E402

TINY = re.compile(r"\(tiny-hat\)")  # the model option of conftest's tiny HAT

# Waiting for a model run on a busy 2-core CI machine: generous, but a hang still fails.
RUN_TIMEOUT_MS = 120_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(tiny_zoo):
    app = webapp.build_app()
    app.launch(
        server_name="127.0.0.1",
        server_port=free_port(),
        prevent_thread_lock=True,
        quiet=True,
        **webapp.launch_options(),
    )
    try:
        yield app.local_url
    finally:
        app.close()
        app.restorer_demo.close()


@pytest.fixture
def page(app_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page = context.new_page()
            page.goto(app_url)
            page.locator("#run-button").wait_for(state="visible", timeout=60_000)
            yield page
        finally:
            browser.close()


def task_label(name: str) -> str:
    return next(label for label, value in webapp.task_choices() if value == name)


def upload(page, path: Path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    # The upload is done when the input shows the picture.
    page.locator("#input-image img").first.wait_for(state="visible", timeout=30_000)


def choose(page, elem_id: str, option: str | re.Pattern) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).click()


def test_upload_choose_task_run_and_compare_in_the_slider(page, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    upload(page, FACE)
    missing = tasks.resolve("real_sr_x4")
    if not rw.is_available(missing):  # a task without weights: no model listed, the note says why
        choose(page, "task", task_label("real_sr_x4"))
        page.get_by_text(f"Weights for {missing.display_name} x4 not found").wait_for(timeout=30_000)
        assert page.locator("#model input").input_value() == ""
    choose(page, "task", task_label("sr_x3"))
    choose(page, "model", TINY)  # listed because its weights are present (maybe after a bundled default)
    page.get_by_role("button", name="Restore").click()

    page.wait_for_function(
        """() => {
            const imgs = [...document.querySelectorAll('#result-slider img')];
            return imgs.length >= 2 && imgs.every((img) => img.complete && img.naturalWidth > 0);
        }""",
        timeout=RUN_TIMEOUT_MS,
    )
    sizes = page.eval_on_selector_all(
        "#result-slider img", "imgs => imgs.map((img) => [img.naturalWidth, img.naturalHeight])"
    )
    assert sizes[:2] == [[288, 288], [288, 288]]  # before (bicubic) and after line up at x3
    info = page.locator("#result-info").inner_text()
    assert "96 x 96 px" in info and "288 x 288 px" in info and "Tiny HAT" in info

    with page.expect_download() as download_info:
        page.locator("#download").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    result = rio.read_image(saved)
    assert saved.name == "astronaut_face_sr_x3_tiny-hat.png" and (result.width, result.height) == (288, 288)

    page.screenshot(path=str(ARTIFACTS / "webapp_result.png"))


def test_bad_upload_shows_the_error_message(page, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    garbage = tmp_path / "holiday.png"
    garbage.write_bytes(b"this is not a PNG at all")
    page.locator("#input-image input[type=file]").set_input_files(str(garbage))
    page.wait_for_timeout(500)  # let the upload finish (the broken picture never shows)
    page.get_by_role("button", name="Restore").click()
    message = page.get_by_text("Cannot read image holiday.png: not a recognised image format")
    message.first.wait_for(state="visible", timeout=RUN_TIMEOUT_MS)
    page.screenshot(path=str(ARTIFACTS / "webapp_bad_upload.png"))  # the toast is fixed: no full_page


def test_example_with_alpha_runs_and_downloads_with_alpha(page, tmp_path):
    page.locator("#examples button:has(img[src$='coffee_cup_alpha.png'])").click()
    page.locator("#input-image img").first.wait_for(state="visible", timeout=30_000)
    choose(page, "model", TINY)
    page.get_by_role("button", name="Restore").click()
    info = page.locator("#result-info")
    info.get_by_text("192 x 144 px, 8-bit RGB + alpha").wait_for(timeout=RUN_TIMEOUT_MS)
    with page.expect_download() as download_info:
        page.locator("#download").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    result = rio.read_image(saved)
    assert (result.width, result.height, result.has_alpha) == (192, 144, True)


def test_compression_shows_rate_and_quality_and_downloads_the_s2l_file(page, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    upload(page, FACE)
    choose(page, "task", task_label("compress"))
    choose(page, "model", re.compile(r"\(s2lic-small-q1\)"))
    page.get_by_role("button", name="Restore").click()
    info = page.locator("#result-info")
    info.get_by_text("Bits per pixel").wait_for(timeout=RUN_TIMEOUT_MS)
    text = info.inner_text()
    assert "File size" in text and "PSNR" in text and "MS-SSIM" in text

    with page.expect_download() as download_info:
        page.locator("#download").click()
    saved = tmp_path / download_info.value.suggested_filename
    download_info.value.save_as(saved)
    assert saved.name == "astronaut_face_s2lic-small-q1.s2l"
    bpp = float(re.search(r"Bits per pixel:\s*([0-9.]+)", text)[1])
    assert bpp == pytest.approx(8 * saved.stat().st_size / (96 * 96), abs=5e-4)  # the rate is the file's
    sizes = page.eval_on_selector_all(
        "#result-slider img", "imgs => imgs.map((img) => [img.naturalWidth, img.naturalHeight])"
    )
    assert sizes[:2] == [[96, 96], [96, 96]]
    page.screenshot(path=str(ARTIFACTS / "webapp_compression.png"))
