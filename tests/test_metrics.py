"""Metrics: BasicSR's PSNR/SSIM fed the right way, LPIPS without the network, MS-SSIM."""

from __future__ import annotations

import math
import urllib.request

import numpy as np
import pytest
import torch
from skimage import data

from restorer import metrics
from restorer._compat import ensure_basicsr_importable
from restorer.errors import RestorerError, WeightsNotFoundError


@pytest.fixture
def photo_pair() -> tuple[np.ndarray, np.ndarray]:
    """A uint8 RGB photo crop and a degraded copy (noise + a colour shift)."""
    gt = data.astronaut()[120:184, 200:272].copy()  # 64x72
    rng = np.random.default_rng(0)
    noisy = gt.astype(np.int16) + rng.integers(-12, 13, gt.shape) + np.array([6, 0, -4])
    return np.clip(noisy, 0, 255).astype(np.uint8), gt


@pytest.mark.parametrize("crop", [0, 4])
@pytest.mark.parametrize("y_channel", [True, False])
def test_psnr_and_ssim_are_basicsr_functions_on_bgr_arrays(photo_pair, crop, y_channel):
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr, calculate_ssim

    out, gt = photo_pair
    out_bgr, gt_bgr = out[..., ::-1].copy(), gt[..., ::-1].copy()  # what cv2.imread would give
    expected_psnr = calculate_psnr(out_bgr, gt_bgr, crop, test_y_channel=y_channel)
    expected_ssim = calculate_ssim(out_bgr, gt_bgr, crop, test_y_channel=y_channel)
    assert abs(metrics.psnr(out, gt, crop, y_channel) - expected_psnr) < 1e-10
    assert abs(metrics.ssim(out, gt, crop, y_channel) - expected_ssim) < 1e-10


def test_gray_images_are_scored_as_three_equal_channels(photo_pair):
    ensure_basicsr_importable()
    from basicsr.metrics import calculate_psnr

    out, gt = (img[..., :1] for img in photo_pair)
    expected = calculate_psnr(np.repeat(out, 3, 2), np.repeat(gt, 3, 2), 2, test_y_channel=True)
    assert abs(metrics.psnr(out, gt, 2) - expected) < 1e-10


def test_y_channel_is_bt601_computed_from_rgb_order():
    """A difference in blue only: the Y difference is 24.966/255 of it (BT.601 studio swing).

    Had red and blue been swapped on the way to BasicSR (it expects BGR), the Y difference would be
    65.481/255 of it and the PSNR about 8 dB lower.
    """
    gt = np.full((32, 32, 3), 100, np.uint8)
    out = gt.copy()
    out[..., 2] += 10  # blue channel of an RGB array
    y_diff = 24.966 / 255.0 * 10
    assert metrics.psnr(out, gt, 0, y_channel=True) == pytest.approx(20 * math.log10(255 / y_diff), abs=1e-3)
    rgb_mse = 10.0**2 / 3
    assert metrics.psnr(out, gt, 0, y_channel=False) == pytest.approx(
        10 * math.log10(255**2 / rgb_mse), abs=1e-9
    )


def test_crop_border_drops_a_known_border_difference(photo_pair):
    _, gt = photo_pair
    out = gt.copy()
    border = 4
    out[:border] = 255 - out[:border]
    out[:, -border:] = 255 - out[:, -border:]
    assert metrics.psnr(out, gt, border) == math.inf  # the only differences are in the cropped frame
    assert metrics.ssim(out, gt, border) == pytest.approx(1.0, abs=1e-12)
    assert metrics.psnr(out, gt, border - 1) < 30  # one pixel less of crop and the border counts
    assert metrics.ssim(out, gt, 0) < 0.95


def test_metric_functions_are_named_as_in_basicsr_option_files():
    assert set(metrics.METRIC_FUNCTIONS) == {"calculate_psnr", "calculate_ssim", "calculate_lpips"}


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to download fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_lpips_without_cached_alexnet_names_the_file_and_where_it_goes(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError) as excinfo:
        metrics.load_lpips()
    message = str(excinfo.value)
    assert metrics.ALEXNET_WEIGHT_FILE == "alexnet-owt-7be5be79.pth"
    assert "alexnet-owt-7be5be79.pth" in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message


def test_alexnet_file_name_is_the_one_torchvision_loads():
    from torchvision.models import AlexNet_Weights

    assert AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1] == metrics.ALEXNET_WEIGHT_FILE


def test_lpips_linear_weights_ship_inside_the_package():
    path = metrics.lpips_linear_weights_path()
    assert path.is_file() and path.parts[-3:] == ("weights", "v0.1", "alex.pth")


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # torchvision, in lpips
def test_lpips_loads_the_cached_trunk_and_matches_the_lpips_package(tmp_path, monkeypatch, no_network):
    """With an AlexNet file in the hub cache (random weights here: the real one is 233 MB), our
    offline loader and the lpips package's own loader (torchvision reading the same cache) give the
    same distance."""
    import lpips
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = metrics.hub_checkpoint_dir()
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), cache / metrics.ALEXNET_WEIGHT_FILE)

    gt = data.chelsea()[:96, :112].copy()
    out = np.clip(gt.astype(np.int16) + 25, 0, 255).astype(np.uint8)
    ours = metrics.lpips_distance(out, gt)
    reference = lpips.LPIPS(net="alex", version="0.1", verbose=False)  # loads via torch.hub's cache
    as_tensor = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()).float()[None] / 127.5 - 1  # noqa: E731
    with torch.no_grad():
        expected = float(reference(as_tensor(out), as_tensor(gt)).item())
    assert ours == pytest.approx(expected, rel=1e-5)
    assert ours > 0
    assert metrics.lpips_distance(gt, gt) == pytest.approx(0.0, abs=1e-7)
    cropped = metrics.lpips_distance(out, gt, crop_border=8)
    with torch.no_grad():
        expected_cropped = float(reference(as_tensor(out[8:-8, 8:-8]), as_tensor(gt[8:-8, 8:-8])).item())
    assert cropped == pytest.approx(expected_cropped, rel=1e-5)


def test_lpips_rejects_a_file_that_is_not_alexnet(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = metrics.hub_checkpoint_dir()
    cache.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(2, 2)}, cache / metrics.ALEXNET_WEIGHT_FILE)
    with pytest.raises(WeightsNotFoundError, match="not torchvision's AlexNet"):
        metrics.load_lpips()


# ---------------------------------------------------------------------------------------------
# MS-SSIM
# ---------------------------------------------------------------------------------------------


def test_ms_ssim_is_pytorch_msssim_on_rgb_images():
    from pytorch_msssim import ms_ssim as reference

    gt = data.coffee()[:176, :200].copy()
    out = np.clip(gt.astype(np.int16) + np.random.default_rng(1).integers(-20, 21, gt.shape), 0, 255)
    out = out.astype(np.uint8)
    as_tensor = lambda a: torch.from_numpy(a.transpose(2, 0, 1).copy()).double()[None]  # noqa: E731
    expected = float(reference(as_tensor(out), as_tensor(gt), data_range=255.0).item())
    value = metrics.ms_ssim(out, gt)
    assert value == pytest.approx(expected, abs=1e-12)
    assert 0.5 < value < 0.999
    # The same images as floats in [0, 1] and as CompressAI-style tensors give the same value.
    assert metrics.ms_ssim(out / 255.0, gt / 255.0) == pytest.approx(value, abs=1e-9)
    assert metrics.ms_ssim(as_tensor(out).float() / 255, as_tensor(gt).float() / 255) == pytest.approx(
        value, abs=1e-5
    )
    assert metrics.ms_ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_errors_are_clear():
    small = np.zeros((100, 200, 3), np.uint8)
    with pytest.raises(RestorerError, match="larger than 160"):
        metrics.ms_ssim(small, small)
    with pytest.raises(RestorerError, match="same range"):
        metrics.ms_ssim(np.zeros((170, 170, 3), np.uint8), np.zeros((170, 170, 3), np.float32))
    with pytest.raises(RestorerError, match="HxWx3"):
        metrics.ms_ssim(np.zeros((170, 170), np.uint8), np.zeros((170, 170), np.uint8))
