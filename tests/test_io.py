"""Image reading/writing: formats, bit depths, orientation, failure modes, atomic writes, input discovery."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps
from skimage import data

from restorer import io as rio
from restorer.errors import ImageReadError, ImageWriteError, RestorerError, UsageError

RNG = np.random.default_rng(1234)


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def random_u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def random_u16(*shape: int, high: int = 65536) -> np.ndarray:
    return RNG.integers(0, high, shape, dtype=np.uint16)


def as_levels(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """Float [0, 1] back to integer levels, to compare with the uint arrays a file was made from."""
    top = 65535 if bit_depth == 16 else 255
    return np.rint(values * top).astype(np.int64)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def raw_png(samples: np.ndarray, color_type: int) -> bytes:
    """A minimal 16-bit PNG built by hand, for layouts neither Pillow nor OpenCV can write (gray+alpha)."""
    height, width = samples.shape[:2]
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def with_exif_orientation(png: bytes, orientation: int, after_pixels: bool = False) -> bytes:
    """Insert an eXIf chunk after IHDR, or just before IEND (after the pixel data, also legal).

    The chunk holds the TIFF structure without Pillow's 'Exif\\0\\0' prefix.
    """
    exif = Image.Exif()
    exif[274] = orientation
    payload = exif.tobytes()
    payload = payload[6:] if payload.startswith(b"Exif\x00\x00") else payload
    at = len(png) - 12 if after_pixels else 33
    return png[:at] + png_chunk(b"eXIf", payload) + png[at:]


def cv2_png_bytes(rgb: np.ndarray) -> bytes:
    bgr = rgb[..., ::-1] if rgb.ndim == 3 and rgb.shape[2] == 3 else rgb
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(bgr))
    assert ok
    return encoded.tobytes()


def upright(raw: np.ndarray, orientation: int) -> np.ndarray:
    """What Pillow's exif_transpose makes of ``raw`` stored with ``orientation`` (the reference)."""
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[1 if raw.ndim == 2 else raw.shape[2]]
    image = Image.fromarray(raw, mode)
    exif = image.getexif()
    exif[274] = orientation
    image.info["exif"] = exif.tobytes()
    return np.asarray(ImageOps.exif_transpose(image))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------------
# round trips through write_image / read_image
# ----------------------------------------------------------------------------------------------------


def test_rgb_png_round_trip_is_exact(tmp_path):
    rgb = data.astronaut()[:40, :52]
    out = rio.write_image(tmp_path / "a.png", rgb / 255.0)
    loaded = rio.read_image(out)
    assert loaded.bit_depth == 8 and loaded.source_format == "png" and loaded.path == out
    assert loaded.pixels.dtype == np.float32 and loaded.pixels.shape == (40, 52, 3)
    assert loaded.pixels.flags.c_contiguous
    assert not loaded.is_gray and not loaded.has_alpha and loaded.alpha is None
    assert (loaded.height, loaded.width) == (40, 52)
    np.testing.assert_array_equal(as_levels(loaded.pixels, 8), rgb)
    # the file really is RGB order on disk (checked with an independent decoder)
    np.testing.assert_array_equal(np.asarray(Image.open(out)), rgb)


def test_rgba_png_keeps_alpha_exactly(tmp_path):
    rgb, alpha = random_u8(9, 11, 3), random_u8(9, 11)
    rio.write_image(tmp_path / "a.png", rgb / 255, alpha=alpha / 255)
    loaded = rio.read_image(tmp_path / "a.png")
    assert loaded.has_alpha and loaded.alpha.shape == (9, 11) and loaded.alpha.dtype == np.float32
    np.testing.assert_array_equal(as_levels(loaded.pixels, 8), rgb)
    np.testing.assert_array_equal(as_levels(loaded.alpha, 8), alpha)
    assert Image.open(tmp_path / "a.png").mode == "RGBA"


@pytest.mark.parametrize("suffix", ["png", "tif"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("high", [65536, 200], ids=["full", "dark"])
def test_16bit_round_trip_is_exact(tmp_path, suffix, channels, high):
    # 'dark': every sample < 256, which must not make the reader guess 8 bits.
    samples = random_u16(7, 10, channels, high=high)
    out = rio.write_image(tmp_path / f"a.{suffix}", samples / 65535, bit_depth=16)
    loaded = rio.read_image(out)
    assert loaded.bit_depth == 16
    assert loaded.pixels.shape == (7, 10, channels) and loaded.is_gray == (channels == 1)
    np.testing.assert_array_equal(as_levels(loaded.pixels, 16), samples)


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16bit_rgba_round_trip_is_exact(tmp_path, suffix):
    samples, alpha = random_u16(6, 5, 3), random_u16(6, 5)
    out = rio.write_image(tmp_path / f"a.{suffix}", samples / 65535, alpha=alpha / 65535, bit_depth=16)
    loaded = rio.read_image(out)
    assert loaded.bit_depth == 16 and loaded.has_alpha
    np.testing.assert_array_equal(as_levels(loaded.pixels, 16), samples)
    np.testing.assert_array_equal(as_levels(loaded.alpha, 16), alpha)


def test_tiff_alpha_is_tagged_as_alpha(tmp_path):
    # OpenCV's TIFF writer leaves the 4th channel untagged; ours must mark it unassociated alpha.
    rio.write_image(tmp_path / "a.tif", random_u8(4, 4, 3) / 255, alpha=random_u8(4, 4) / 255)
    with tifffile.TiffFile(tmp_path / "a.tif") as tif:
        assert tuple(tif.pages[0].extrasamples) == (2,)
    assert Image.open(tmp_path / "a.tif").mode == "RGBA"


def test_dark_16bit_files_written_by_others_stay_16bit(tmp_path):
    dark = random_u16(5, 6, 3, high=256)
    (tmp_path / "dark.png").write_bytes(cv2_png_bytes(dark))
    Image.fromarray(dark[..., 0]).save(tmp_path / "dark_gray.png")  # Pillow writes I;16 as 16-bit gray
    tifffile.imwrite(tmp_path / "dark.tif", dark, photometric="rgb")
    for name, expected in [("dark.png", dark), ("dark_gray.png", dark[..., :1]), ("dark.tif", dark)]:
        loaded = rio.read_image(tmp_path / name)
        assert loaded.bit_depth == 16, name
        np.testing.assert_array_equal(as_levels(loaded.pixels, 16), expected)


def test_16bit_gray_alpha_png_is_gray_with_alpha(tmp_path):
    # Pillow opens this as 8-bit "RGBA"; the header says gray+alpha, 16 bits.
    samples = random_u16(4, 7, 2)
    (tmp_path / "la16.png").write_bytes(raw_png(samples, color_type=4))
    loaded = rio.read_image(tmp_path / "la16.png")
    assert loaded.bit_depth == 16 and loaded.is_gray and loaded.has_alpha
    np.testing.assert_array_equal(as_levels(loaded.pixels[..., 0], 16), samples[..., 0])
    np.testing.assert_array_equal(as_levels(loaded.alpha, 16), samples[..., 1])


def test_16bit_gray_alpha_tiff_is_gray_with_alpha(tmp_path):
    # Pillow cannot open this layout and OpenCV reduces it to 8 bits.
    samples = random_u16(5, 9, 2)
    tifffile.imwrite(tmp_path / "la16.tif", samples, photometric="minisblack", extrasamples=["unassalpha"])
    loaded = rio.read_image(tmp_path / "la16.tif")
    assert loaded.bit_depth == 16 and loaded.is_gray and loaded.has_alpha
    np.testing.assert_array_equal(as_levels(loaded.pixels[..., 0], 16), samples[..., 0])
    np.testing.assert_array_equal(as_levels(loaded.alpha, 16), samples[..., 1])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_float_tiff_in_float_tiff_out(tmp_path, channels):
    samples = RNG.random((6, 10, channels), dtype=np.float32)
    extras = ["unassalpha"] if channels == 4 else None
    tifffile.imwrite(
        tmp_path / "f.tif",
        samples[..., 0] if channels == 1 else samples,
        photometric="minisblack" if channels == 1 else "rgb",
        extrasamples=extras,
    )
    loaded = rio.read_image(tmp_path / "f.tif")
    assert loaded.bit_depth == 32 and loaded.source_format == "tif"
    colour = min(channels, 3)
    np.testing.assert_array_equal(loaded.pixels, samples[..., :colour])
    assert (loaded.alpha is not None) == (channels == 4)
    ext = rio.resolve_output_ext("auto", loaded)
    assert ext == "tif"
    out = rio.write_image(tmp_path / f"out.{ext}", loaded.pixels, loaded.alpha, bit_depth=loaded.bit_depth)
    again = rio.read_image(out)
    assert again.bit_depth == 32
    np.testing.assert_array_equal(again.pixels, samples[..., :colour])  # no quantisation on the way
    png = rio.write_image(tmp_path / "out.png", loaded.pixels, loaded.alpha, bit_depth=32)
    assert rio.read_image(png).bit_depth == 16


@pytest.mark.parametrize("bad, reason", [(np.nan, "NaN"), (2.5, r"span .*2\.5")])
def test_float_tiff_outside_the_unit_range_is_refused(tmp_path, bad, reason):
    samples = RNG.random((4, 4, 3), dtype=np.float32)
    samples[1, 2, 0] = bad
    tifffile.imwrite(tmp_path / "f.tif", samples, photometric="rgb")
    with pytest.raises(ImageReadError, match=reason):
        rio.read_image(tmp_path / "f.tif")


def _icc(space: str) -> bytes:
    from PIL import ImageCms

    if space == "gray":  # Pillow builds no gray profile: the sRGB one with its colour space set to GRAY
        profile = bytearray(_icc("rgb"))
        profile[16:20] = b"GRAY"
        return bytes(profile)
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "tif"])
@pytest.mark.parametrize("with_alpha", [False, True])
def test_icc_profile_is_read_and_carried_to_the_output(tmp_path, suffix, with_alpha):
    """Wide-gamut photos keep their colours only with their profile: every format with room keeps it,
    and the files stay readable by OpenCV and Pillow."""
    profile = _icc("rgb")
    pixels = RNG.random((12, 20, 3), dtype=np.float32)
    alpha = RNG.random((12, 20), dtype=np.float32) if with_alpha else None
    written = rio.write_image(tmp_path / f"a.{suffix}", pixels, alpha, icc_profile=profile)
    with Image.open(written) as image:
        image.load()
        assert image.info.get("icc_profile") == profile
        assert image.size == (20, 12)
    assert cv2.imread(str(written), cv2.IMREAD_UNCHANGED).shape[:2] == (12, 20)
    loaded = rio.read_image(written)
    assert loaded.icc_profile == profile
    again = rio.write_image(
        tmp_path / f"b.{suffix}", loaded.pixels, loaded.alpha, icc_profile=loaded.icc_profile
    )
    assert rio.read_image(again).icc_profile == profile


def test_icc_profile_of_another_colour_space_is_not_embedded(tmp_path):
    gray = rio.write_image(
        tmp_path / "g.png", RNG.random((8, 8, 1), dtype=np.float32), icc_profile=_icc("rgb")
    )
    assert rio.read_image(gray).icc_profile is None
    kept = rio.write_image(
        tmp_path / "k.png", RNG.random((8, 8, 1), dtype=np.float32), icc_profile=_icc("gray")
    )
    assert rio.read_image(kept).icc_profile == _icc("gray")
    assert (
        rio.read_image(
            rio.write_image(tmp_path / "b.bmp", np.zeros((4, 4, 3)), icc_profile=_icc("rgb"))
        ).icc_profile
        is None
    )


def test_gray_png_is_one_channel_but_equal_rgb_stays_rgb(tmp_path):
    gray = data.camera()[:30, :20]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(np.stack([gray] * 3, axis=2)).save(tmp_path / "rgb.png")
    loaded = rio.read_image(tmp_path / "gray.png")
    assert loaded.is_gray and loaded.pixels.shape == (30, 20, 1) and loaded.bit_depth == 8
    np.testing.assert_array_equal(as_levels(loaded.pixels[..., 0], 8), gray)
    assert rio.read_image(tmp_path / "rgb.png").pixels.shape == (30, 20, 3)


def test_gray_alpha_png(tmp_path):
    gray, alpha = random_u8(5, 6), random_u8(5, 6)
    Image.fromarray(np.stack([gray, alpha], axis=2), "LA").save(tmp_path / "la.png")
    loaded = rio.read_image(tmp_path / "la.png")
    assert loaded.is_gray and loaded.has_alpha
    np.testing.assert_array_equal(as_levels(loaded.pixels[..., 0], 8), gray)
    np.testing.assert_array_equal(as_levels(loaded.alpha, 8), alpha)


@pytest.mark.parametrize(("suffix", "depth"), [("png", 8), ("png", 16), ("tif", 8), ("tif", 16), ("tif", 32)])
def test_gray_with_alpha_stays_gray_with_alpha(tmp_path, suffix, depth):
    """Issue 21: gray + alpha was written as RGBA (three equal channels, read back as colour)."""
    gray = RNG.random((5, 6, 1), dtype=np.float32)
    alpha = RNG.random((5, 6), dtype=np.float32)
    written = rio.write_image(
        tmp_path / f"la.{suffix}", gray, alpha, bit_depth=depth, icc_profile=_icc("gray")
    )
    if suffix == "png":
        assert written.read_bytes()[25] == 4  # IHDR colour type 4: gray + alpha
        assert written.read_bytes()[24] == depth
    else:
        with tifffile.TiffFile(written) as tif:
            page = tif.pages[0]
            assert page.samplesperpixel == 2 and page.photometric == tifffile.PHOTOMETRIC.MINISBLACK
            assert page.extrasamples == (tifffile.EXTRASAMPLE.UNASSALPHA,)
    loaded = rio.read_image(written)
    assert loaded.pixels.shape == (5, 6, 1) and loaded.has_alpha and loaded.bit_depth == depth
    assert loaded.icc_profile == _icc("gray")  # a gray profile now fits the output
    if depth == 32:
        np.testing.assert_array_equal(loaded.pixels, gray)
        np.testing.assert_array_equal(loaded.alpha, alpha)
    else:
        np.testing.assert_array_equal(as_levels(loaded.pixels, depth), as_levels(gray, depth))
        np.testing.assert_array_equal(as_levels(loaded.alpha, depth), as_levels(alpha, depth))


def test_gray_with_alpha_in_webp_is_rgba(tmp_path):
    """WebP has no gray: gray + alpha goes in as three equal channels plus alpha."""
    gray, alpha = random_u8(5, 6, 1), random_u8(5, 6)
    rio.write_image(tmp_path / "la.webp", gray / 255, alpha=alpha / 255, quality=100)
    loaded = rio.read_image(tmp_path / "la.webp")
    assert loaded.pixels.shape == (5, 6, 3) and loaded.has_alpha
    np.testing.assert_array_equal(as_levels(loaded.alpha, 8), alpha)


def test_palette_png_with_and_without_transparency(tmp_path):
    rgb = data.astronaut()[:24, :24]
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "opaque.png")
    palette.save(tmp_path / "transparent.png", transparency=0)
    expected = np.asarray(palette.convert("RGBA"))

    opaque = rio.read_image(tmp_path / "opaque.png")
    assert opaque.pixels.shape == (24, 24, 3) and not opaque.has_alpha
    np.testing.assert_array_equal(as_levels(opaque.pixels, 8), expected[..., :3])

    transparent = rio.read_image(tmp_path / "transparent.png")
    index = np.asarray(palette)
    assert transparent.has_alpha
    np.testing.assert_array_equal(transparent.alpha == 0, index == 0)
    assert (index == 0).any() and (transparent.alpha[index != 0] == 1).all()


def test_single_colour_transparency_becomes_alpha(tmp_path):
    gray = np.array([[0, 7], [7, 9]], dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "trns.png", transparency=7)
    loaded = rio.read_image(tmp_path / "trns.png")
    assert loaded.is_gray and loaded.has_alpha
    np.testing.assert_array_equal(loaded.alpha, [[1, 0], [0, 1]])


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    rgb = cv2.resize(data.astronaut(), (64, 64), interpolation=cv2.INTER_AREA)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=98)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    loaded = rio.read_image(tmp_path / "cmyk.jpg")
    assert loaded.pixels.shape == (64, 64, 3) and loaded.source_format == "jpg" and loaded.bit_depth == 8
    assert np.abs(as_levels(loaded.pixels, 8) - rgb.astype(np.int64)).mean() < 4


def test_jpeg_webp_bmp_tiff_are_read(tmp_path):
    rgb = data.astronaut()[::8, ::8]
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    Image.fromarray(rgb).save(tmp_path / "a.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "a.bmp")
    Image.fromarray(rgb).save(tmp_path / "a.tiff")
    cases = [
        ("a.jpg", "jpg", False),
        ("a.webp", "webp", True),
        ("a.bmp", "bmp", True),
        ("a.tiff", "tif", True),
    ]
    for name, fmt, exact in cases:
        loaded = rio.read_image(tmp_path / name)
        assert loaded.source_format == fmt and loaded.pixels.shape == (64, 64, 3) and loaded.bit_depth == 8
        levels = as_levels(loaded.pixels, 8)
        # lossy JPEG: the same pixels Pillow decodes, and close to what was saved
        expected = rgb if exact else np.asarray(Image.open(tmp_path / name))
        np.testing.assert_array_equal(levels, expected)
        assert np.abs(levels - rgb.astype(np.int64)).mean() < 6


@pytest.mark.parametrize("suffix", ["jpg", "webp", "bmp"])
def test_8bit_formats_drop_16bit_and_only_webp_keeps_alpha(tmp_path, suffix):
    rgb = np.full((8, 8, 3), 0.5)
    alpha = np.full((8, 8), 0.25)
    out = rio.write_image(tmp_path / f"a.{suffix}", rgb, alpha=alpha, bit_depth=16, quality=100)
    loaded = rio.read_image(out)
    assert loaded.bit_depth == 8 and loaded.source_format == suffix
    assert loaded.has_alpha == (suffix == "webp")
    assert np.abs(loaded.pixels - 0.5).max() < 3 / 255


def test_write_clips_out_of_range_and_nan(tmp_path):
    pixels = np.array([[[-0.5, 1.7, np.nan], [0.5, 1 / 255, 254.6 / 255]]], dtype=np.float32)
    rio.write_image(tmp_path / "a.png", pixels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), [[[0, 255, 0], [128, 1, 255]]])


def test_write_accepts_2d_gray_and_jpeg_suffix_spellings(tmp_path):
    gray = random_u8(6, 5)
    rio.write_image(tmp_path / "g.PNG", gray / 255)
    assert rio.read_image(tmp_path / "g.PNG").is_gray
    rio.write_image(tmp_path / "c.JPEG", random_u8(6, 5, 3) / 255)
    assert rio.read_image(tmp_path / "c.JPEG").source_format == "jpg"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pixels": np.zeros((4, 4, 2))}, "H x W x 1 or H x W x 3"),
        ({"pixels": np.zeros((4, 4, 3)), "alpha": np.zeros((3, 4))}, "alpha shape"),
        ({"pixels": np.zeros((4, 4, 3)), "bit_depth": 12}, "bit depth"),
        ({"pixels": np.zeros((4, 4, 3)), "quality": 0}, "quality"),
        ({"pixels": np.zeros((4, 4, 3), np.uint8)}, "floating point"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ImageWriteError, match=message):
        rio.write_image(tmp_path / "a.png", **kwargs)
    assert leftovers(tmp_path) == []


def test_write_rejects_unknown_suffix(tmp_path):
    with pytest.raises(ImageWriteError, match="unknown format"):
        rio.write_image(tmp_path / "a.gif", np.zeros((2, 2, 3)))
    with pytest.raises(ImageWriteError, match="no suffix"):
        rio.write_image(tmp_path / "noext", np.zeros((2, 2, 3)))


# ----------------------------------------------------------------------------------------------------
# EXIF orientation
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pillow(orientation):
    raw = random_u8(5, 8, 3)
    np.testing.assert_array_equal(rio.apply_orientation(raw, orientation), upright(raw, orientation))
    gray = random_u8(5, 8)
    np.testing.assert_array_equal(rio.apply_orientation(gray, orientation), upright(gray, orientation))


def test_apply_orientation_ignores_invalid_values():
    raw = random_u8(3, 4)
    for value in (0, 9, -1):
        assert rio.apply_orientation(raw, value) is raw


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", ["jpg", "webp", "png"])
def test_exif_orientation_is_applied(tmp_path, orientation, suffix):
    image = Image.fromarray(data.astronaut()[:32, :48])
    exif = image.getexif()
    exif[274] = orientation
    image.save(tmp_path / f"o.{suffix}", exif=exif, quality=95)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / f"o.{suffix}")))
    loaded = rio.read_image(tmp_path / f"o.{suffix}")
    assert loaded.pixels.shape[:2] == ((48, 32) if orientation >= 5 else (32, 48))
    np.testing.assert_array_equal(as_levels(loaded.pixels, 8), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_png_exif_orientation_is_applied_once(tmp_path, orientation):
    # OpenCV decodes these (IMREAD_UNCHANGED ignores EXIF); the reader must rotate exactly once.
    rgb = random_u16(4, 6, 3)
    (tmp_path / "o.png").write_bytes(with_exif_orientation(cv2_png_bytes(rgb), orientation))
    assert Image.open(tmp_path / "o.png").getexif().get(274) == orientation  # the chunk is valid
    loaded = rio.read_image(tmp_path / "o.png")
    assert loaded.bit_depth == 16
    np.testing.assert_array_equal(as_levels(loaded.pixels, 16), rio.apply_orientation(rgb, orientation))

    (tmp_path / "late.png").write_bytes(with_exif_orientation(cv2_png_bytes(rgb), orientation, True))
    loaded = rio.read_image(tmp_path / "late.png")
    np.testing.assert_array_equal(as_levels(loaded.pixels, 16), rio.apply_orientation(rgb, orientation))

    gray = random_u16(4, 6)
    exif = Image.Exif()
    exif[274] = orientation
    Image.fromarray(gray).save(tmp_path / "g.png", exif=exif)
    loaded = rio.read_image(tmp_path / "g.png")
    assert loaded.bit_depth == 16 and loaded.is_gray
    np.testing.assert_array_equal(
        as_levels(loaded.pixels[..., 0], 16), rio.apply_orientation(gray, orientation)
    )


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_tiff_orientation_is_applied_once(tmp_path, orientation):
    # OpenCV's TIFF decoder applies the Orientation tag by itself, even with IMREAD_UNCHANGED.
    rgb = random_u16(4, 6, 3)
    tifffile.imwrite(tmp_path / "o.tif", rgb, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
    gray = random_u16(4, 6)
    Image.fromarray(gray).save(tmp_path / "g.tif", tiffinfo={274: orientation})
    for name, raw in [("o.tif", rgb), ("g.tif", gray[..., None])]:
        loaded = rio.read_image(tmp_path / name)
        assert loaded.bit_depth == 16, name
        np.testing.assert_array_equal(as_levels(loaded.pixels, 16), rio.apply_orientation(raw, orientation))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_8bit_tiff_orientation_is_applied_once(tmp_path, orientation, compression):
    # Pillow turns TIFFs upright itself while loading them (LZW goes through libtiff, raw does not).
    rgb = random_u8(4, 6, 3)
    Image.fromarray(rgb).save(tmp_path / "o.tif", tiffinfo={274: orientation}, compression=compression)
    loaded = rio.read_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(as_levels(loaded.pixels, 8), upright(rgb, orientation))


def test_orientation_applies_to_alpha_too(tmp_path):
    rgba = random_u8(4, 6, 4)
    image = Image.fromarray(rgba, "RGBA")
    exif = image.getexif()
    exif[274] = 8
    image.save(tmp_path / "o.png", exif=exif)
    loaded = rio.read_image(tmp_path / "o.png")
    expected = upright(rgba, 8)
    np.testing.assert_array_equal(as_levels(loaded.pixels, 8), expected[..., :3])
    np.testing.assert_array_equal(as_levels(loaded.alpha, 8), expected[..., 3])


# ----------------------------------------------------------------------------------------------------
# paths and failures
# ----------------------------------------------------------------------------------------------------


def test_non_ascii_paths_read_and_write(tmp_path):
    folder = tmp_path / "папка 目录"
    rgb = random_u8(6, 7, 3)
    out = rio.write_image(folder / "фото 图像.png", rgb / 255)  # also creates the folder
    assert out.exists()
    np.testing.assert_array_equal(as_levels(rio.read_image(out).pixels, 8), rgb)
    samples = random_u16(6, 7, 3)
    out16 = rio.write_image(folder / "фото 图像 16.tif", samples / 65535, bit_depth=16)
    np.testing.assert_array_equal(as_levels(rio.read_image(out16).pixels, 16), samples)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is not an image at all" * 10, "not a recognised image format"),
        (b"", "empty"),
    ],
)
def test_unreadable_files_raise_image_read_error(tmp_path, content, reason):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as info:
        rio.read_image(path)
    assert str(info.value).startswith(f"Cannot read image {path}:")
    assert isinstance(info.value, RestorerError)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_truncated_png_raises_image_read_error(tmp_path, bit_depth):
    samples = random_u8(64, 64, 3) if bit_depth == 8 else random_u16(64, 64, 3)
    encoded = cv2_png_bytes(samples)
    path = tmp_path / "cut.png"
    path.write_bytes(encoded[: len(encoded) // 2])
    with pytest.raises(ImageReadError, match="Cannot read image"):
        rio.read_image(path)


def _jpeg_bytes(image: Image.Image, **options) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def test_jpeg_whose_header_declares_more_pixels_than_its_data_is_an_error(tmp_path):
    """Pillow fills the missing 99 % with gray and says nothing; that must not become an output."""
    encoded = bytearray(_jpeg_bytes(Image.fromarray(random_u8(48, 64, 3))))
    sof = encoded.find(b"\xff\xc0")
    encoded[sof + 5 : sof + 9] = struct.pack(">HH", 480, 640)
    path = tmp_path / "liar.jpg"
    path.write_bytes(bytes(encoded))
    assert Image.open(path).convert("RGB").size == (640, 480)  # what a lenient decoder gives
    with pytest.raises(ImageReadError, match="JPEG data is damaged or incomplete"):
        rio.read_image(path)


def test_jpeg_cut_before_its_end_marker_is_an_error(tmp_path):
    encoded = _jpeg_bytes(Image.fromarray(random_u8(64, 64, 3)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(encoded[: len(encoded) * 2 // 3] + b"\xff\xd9")  # ends cleanly, data missing
    with pytest.raises(ImageReadError, match="damaged or incomplete"):
        rio.read_image(path)


@pytest.mark.parametrize("mode, options", [("L", {}), ("CMYK", {}), ("RGB", {"progressive": True})])
def test_valid_jpeg_flavours_pass_the_strict_check(tmp_path, mode, options):
    path = tmp_path / "ok.jpg"
    path.write_bytes(_jpeg_bytes(Image.fromarray(random_u8(40, 56, 3)).convert(mode), **options))
    loaded = rio.read_image(path)
    assert (loaded.height, loaded.width) == (40, 56)


def test_folder_and_missing_file_raise_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="it is a folder"):
        rio.read_image(tmp_path)
    with pytest.raises(ImageReadError, match="no such file"):
        rio.read_image(tmp_path / "missing.png")


def test_pixel_limit_is_enforced_with_a_clear_message(tmp_path, monkeypatch):
    rio.write_image(tmp_path / "big.png", np.zeros((20, 30, 3)))
    monkeypatch.setattr(rio, "MAX_IMAGE_PIXELS", 599)
    with pytest.raises(ImageReadError, match="30 x 20 pixels is more than the limit of 599"):
        rio.read_image(tmp_path / "big.png")
    monkeypatch.setattr(rio, "MAX_IMAGE_PIXELS", 600)
    assert rio.read_image(tmp_path / "big.png").width == 30


def test_pillow_global_limit_is_restored(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    rio.write_image(tmp_path / "a.png", np.zeros((2, 2, 3)))
    rio.read_image(tmp_path / "a.png")
    with pytest.raises(ImageReadError):
        rio.read_image(tmp_path)
    assert Image.MAX_IMAGE_PIXELS == before


# ----------------------------------------------------------------------------------------------------
# atomic writes and protected inputs
# ----------------------------------------------------------------------------------------------------


def test_interrupted_replace_leaves_no_target_and_no_temp_file(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rio.write_image(tmp_path / "out.png", np.zeros((4, 4, 3)))
    assert leftovers(tmp_path) == []


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    rio.write_image(target, np.zeros((4, 4, 3)))
    before = target.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rio.os, "fsync", interrupted)  # after the temp file got its bytes
    with pytest.raises(KeyboardInterrupt):
        rio.write_image(target, np.ones((4, 4, 3)))
    assert leftovers(tmp_path) == ["out.png"]
    assert target.read_bytes() == before


def test_interrupted_encode_creates_nothing(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rio, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        rio.write_image(tmp_path / "sub" / "out.png", np.zeros((4, 4, 3)))
    assert leftovers(tmp_path) == []


def test_os_errors_become_image_write_error_without_leftovers(tmp_path):
    (tmp_path / "taken.png").mkdir()  # the target name is a folder: os.replace fails
    with pytest.raises(ImageWriteError, match="Cannot write image"):
        rio.write_image(tmp_path / "taken.png", np.zeros((4, 4, 3)))
    assert leftovers(tmp_path) == ["taken.png"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageWriteError, match="Cannot write image"):
        rio.write_image(tmp_path / "file" / "out.png", np.zeros((4, 4, 3)))  # parent is a file


def test_written_file_gets_normal_permissions(tmp_path):
    out = rio.write_image(tmp_path / "a.png", np.zeros((2, 2, 3)))
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_protect_refuses_to_overwrite_an_input(tmp_path, monkeypatch):
    source = tmp_path / "in.png"
    rio.write_image(source, np.zeros((4, 4, 3)))
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)
    for spelling in [source, Path("in.png"), tmp_path / "sub" / ".." / "in.png"]:
        with pytest.raises(ImageWriteError, match="overwrite the input"):
            rio.write_image(spelling, np.ones((4, 4, 3)), protect=[source])
    (tmp_path / "link.png").symlink_to(source)
    with pytest.raises(ImageWriteError, match="overwrite the input"):
        rio.write_image(tmp_path / "link.png", np.ones((4, 4, 3)), protect=[str(source)])
    assert source.read_bytes() == before
    # other targets are fine
    rio.write_image(tmp_path / "out.png", np.ones((4, 4, 3)), protect=[source])


# ----------------------------------------------------------------------------------------------------
# output names
# ----------------------------------------------------------------------------------------------------


def loaded(
    source_format: str, alpha: bool = False, bit_depth: int = 8, gray: bool = False
) -> rio.LoadedImage:
    channels = 1 if gray else 3
    return rio.LoadedImage(
        pixels=np.zeros((2, 2, channels), np.float32),
        alpha=np.ones((2, 2), np.float32) if alpha else None,
        bit_depth=bit_depth,
        source_format=source_format,
        path=Path(f"x.{source_format}"),
    )


@pytest.mark.parametrize(
    ("ext", "image", "expected"),
    [
        ("auto", loaded("png"), "png"),
        ("auto", loaded("jpg"), "jpg"),
        ("auto", loaded("webp"), "webp"),
        ("auto", loaded("tif"), "tif"),
        ("auto", loaded("bmp"), "bmp"),
        ("auto", loaded("jpg", alpha=True), "png"),
        ("auto", loaded("bmp", alpha=True), "png"),
        ("auto", loaded("webp", alpha=True), "webp"),
        ("auto", loaded("tif", alpha=True), "tif"),
        ("auto", loaded("png", bit_depth=16), "png"),
        ("auto", loaded("tif", bit_depth=16, alpha=True), "tif"),
        ("auto", loaded("webp", bit_depth=16), "png"),
        ("auto", loaded("gif"), "png"),
        ("jpg", loaded("png", alpha=True), "jpg"),
        ("JPEG", loaded("png"), "jpg"),
        ("tiff", loaded("png"), "tif"),
        ("webp", loaded("tif", bit_depth=16), "webp"),
        ("png", loaded("jpg"), "png"),
    ],
)
def test_resolve_output_ext(ext, image, expected):
    assert rio.resolve_output_ext(ext, image) == expected


def test_resolve_output_ext_rejects_unknown_format():
    with pytest.raises(UsageError, match="Unknown output format 'gif'"):
        rio.resolve_output_ext("gif", loaded("png"))


def test_output_path_for():
    assert rio.output_path_for("in/photo.v2.JPG", "out", "x4", "png") == Path("out/photo.v2_x4.png")
    assert rio.output_path_for(Path("a/b.tif"), Path("o"), "", "tif") == Path("o/b.tif")
    assert rio.output_path_for("фото.png", "out", "sr", ".webp") == Path("out/фото_sr.webp")


def test_output_of_auto_ext_round_trips_alpha_from_jpeg_input(tmp_path):
    rgba = random_u8(4, 4, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")
    image = rio.read_image(tmp_path / "in.png")
    image.source_format = "jpg"  # pretend it came from a format without alpha
    ext = rio.resolve_output_ext("auto", image)
    out = rio.write_image(
        rio.output_path_for(image.path, tmp_path / "out", "x1", ext), image.pixels, image.alpha
    )
    assert out.name == "in_x1.png" and rio.read_image(out).has_alpha


# ----------------------------------------------------------------------------------------------------
# collecting inputs
# ----------------------------------------------------------------------------------------------------


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_is_image_file():
    for name in ["a.png", "a.PNG", "a.jpg", "a.JPEG", "b.webp", "c.tif", "c.TIFF", "d.bmp"]:
        assert rio.is_image_file(name), name
    for name in ["a.txt", "a.gif", "png", "a.png.tmp", "a"]:
        assert not rio.is_image_file(name), name
    assert {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"} == set(rio.IMAGE_EXTENSIONS)


def test_collect_images_folder_natural_order_and_skips(tmp_path):
    for name in ["img10.png", "img2.png", "IMG1.jpg", "notes.txt", "img2b.webp", ".hidden.png"]:
        touch(tmp_path / "in" / name)
    touch(tmp_path / "in" / "nested" / "deep.png")
    images, skipped = rio.collect_images([tmp_path / "in"])
    assert [p.name for p in images] == ["IMG1.jpg", "img2.png", "img2b.webp", "img10.png"]
    assert [p.name for p in skipped] == ["notes.txt"]


def test_collect_images_recursive(tmp_path):
    touch(tmp_path / "in" / "b.png")
    touch(tmp_path / "in" / "sub10" / "z.png")
    touch(tmp_path / "in" / "sub2" / "y.tif")
    touch(tmp_path / "in" / "sub2" / "deeper" / "x.bmp")
    touch(tmp_path / "in" / "sub2" / "readme.md")
    images, skipped = rio.collect_images([str(tmp_path / "in")], recursive=True)
    rel = [p.relative_to(tmp_path / "in").as_posix() for p in images]
    assert rel == ["b.png", "sub2/y.tif", "sub2/deeper/x.bmp", "sub10/z.png"]
    assert [p.name for p in skipped] == ["readme.md"]


def test_collect_images_files_in_given_order_and_deduplicated(tmp_path):
    a = touch(tmp_path / "a.png")
    b = touch(tmp_path / "b.jpg")
    text = touch(tmp_path / "c.txt")
    images, skipped = rio.collect_images([b, a, tmp_path, a, text])
    assert images == [b, a]
    assert skipped == [text]


def test_collect_images_survives_symlink_loops(tmp_path):
    touch(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "loop").symlink_to(tmp_path / "in")
    images, _ = rio.collect_images([tmp_path / "in"], recursive=True)
    assert [p.name for p in images] == ["a.png"]


def test_collect_images_missing_path(tmp_path):
    with pytest.raises(ImageReadError, match="No such file or folder: .*nothing.png"):
        rio.collect_images([tmp_path / "nothing.png"])


# ----------------------------------------------------------------------------------------------------
# channel helpers
# ----------------------------------------------------------------------------------------------------


def test_to_gray_and_to_rgb():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.2, 0.2]]], dtype=np.float32)
    gray = rio.to_gray(rgb)
    assert gray.shape == (1, 3, 1) and gray.dtype == np.float32
    np.testing.assert_allclose(gray[..., 0], [[0.299, 0.587, 0.2]], atol=1e-6)
    assert rio.to_gray(gray) is gray
    back = rio.to_rgb(gray)
    assert back.shape == (1, 3, 3) and np.array_equal(back[..., 0], back[..., 2])
    assert rio.to_rgb(rgb) is rgb


def test_gray_matches_opencv_luma():
    rgb = data.astronaut()[:16, :16]
    ours = np.rint(rio.to_gray(rgb / 255.0)[..., 0] * 255)
    theirs = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert np.abs(ours - theirs).max() <= 1


def test_io_module_does_not_import_torch():
    source = Path(rio.__file__).read_text(encoding="utf-8")
    assert "import torch" not in source


def test_image_open_errors_are_not_leaked_from_bad_tiff(tmp_path):
    path = tmp_path / "bad.tif"
    path.write_bytes(b"II*\x00" + b"\xff" * 40)
    with pytest.raises(ImageReadError, match="Cannot read image"):
        rio.read_image(path)


# ----------------------------------------------------------------------------------------------------
# special entries and WebP headers (issue 21)
# ----------------------------------------------------------------------------------------------------


def test_regular_file_problem_names_each_kind_without_opening(tmp_path):
    good = touch(tmp_path / "good.png")
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dangling.png").symlink_to("nowhere.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    (tmp_path / "null.png").symlink_to("/dev/null")
    (tmp_path / "to-pipe.png").symlink_to("pipe.png")
    assert rio.regular_file_problem(good) is None
    assert rio.regular_file_problem(tmp_path / "pipe.png") == "it is a FIFO, not a regular file"
    assert rio.regular_file_problem(tmp_path / "to-pipe.png") == "it is a FIFO, not a regular file"
    assert rio.regular_file_problem(tmp_path / "null.png") == "it is a device, not a regular file"
    assert rio.regular_file_problem(tmp_path / "loop.png") == "it is a loop of symbolic links"
    assert "'nowhere.png', which does not exist" in rio.regular_file_problem(tmp_path / "dangling.png")
    assert rio.regular_file_problem(tmp_path / "missing.png") == "no such file"
    assert rio.regular_file_problem(tmp_path) == "it is a folder"


def test_collect_images_reports_special_entries_instead_of_dropping_them(tmp_path):
    folder = tmp_path / "in"
    touch(folder / "good.png")
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "pipe.txt")  # not wanted by its name: skipped like any other non-image
    (folder / "dangling.jpg").symlink_to("nowhere.jpg")
    (folder / "loop.tif").symlink_to("loop.tif")
    unreadable: list[tuple[Path, str]] = []
    images, skipped = rio.collect_images([folder], unreadable=unreadable)
    assert [p.name for p in images] == ["good.png"] and [p.name for p in skipped] == ["pipe.txt"]
    reasons = {path.name: message for path, message in unreadable}
    assert sorted(reasons) == ["dangling.jpg", "loop.tif", "pipe.png"]
    assert reasons["pipe.png"] == f"Cannot read {folder / 'pipe.png'}: it is a FIFO, not a regular file"
    # without a list to report into (e.g. a benchmark's dataset folder) they are left out, as before
    assert rio.collect_images([folder])[0] == images


def _webp_with_size(kind: str, width: int, height: int) -> bytes:
    """A real WebP (lossless VP8L, lossy VP8, or VP8L in the extended VP8X layout) whose header then
    declares ``width x height``."""
    buffer = io.BytesIO()
    Image.fromarray(random_u8(16, 16, 3)).save(buffer, "WEBP", lossless=kind != "lossy", quality=80)
    data = bytearray(buffer.getvalue())
    if kind == "lossless":
        bits = int.from_bytes(data[21:25], "little") & ~0xFFFFFFF
        data[21:25] = (bits | (width - 1) | ((height - 1) << 14)).to_bytes(4, "little")
    elif kind == "lossy":
        data[26:30] = struct.pack("<HH", width, height)
    else:
        vp8x = bytes(4) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        body = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + vp8x + bytes(data[12:])
        data = bytearray(b"RIFF" + struct.pack("<I", len(body)) + body)
    return bytes(data)


@pytest.mark.parametrize("kind", ["lossless", "lossy", "extended"])
def test_webp_size_comes_from_the_header_before_pillow_opens_it(tmp_path, monkeypatch, kind):
    """Pillow's WebP plugin allocates the whole canvas inside Image.open (16383 x 16383 declared by a
    38-byte file: 4.4 GB), so the size is read from the RIFF chunks and a bomb refused before it."""
    path = tmp_path / "bomb.webp"
    path.write_bytes(_webp_with_size(kind, 16383, 12000))

    def no_pillow(*args, **kwargs):
        raise AssertionError("Pillow opened a WebP whose size the header gives")

    monkeypatch.setattr(Image, "open", no_pillow)
    assert rio.probe_size(path) == (12000, 16383)
    monkeypatch.setattr(rio, "MAX_IMAGE_PIXELS", 16383 * 12000 - 1)
    with pytest.raises(ImageReadError, match="16383 x 12000 pixels is more than the limit"):
        rio.read_image(path)


def test_webp_header_size_matches_what_pillow_decodes(tmp_path):
    for kind in ("lossless", "lossy"):
        buffer = io.BytesIO()
        Image.fromarray(random_u8(21, 34, 3)).save(buffer, "WEBP", lossless=kind == "lossless")
        (tmp_path / f"{kind}.webp").write_bytes(buffer.getvalue())
        assert rio.probe_size(tmp_path / f"{kind}.webp") == (21, 34)
        assert rio.read_image(tmp_path / f"{kind}.webp").pixels.shape == (21, 34, 3)
