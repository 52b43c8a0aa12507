"""Issue 21 ("Nothing lost, nothing silent"), medical part: damaged rescale values, volumes above the voxel
limit and undecodable compressed DICOM each give one clear line naming the file and the tag (not NaN,
infinite or all-zero slices written with exit status 0, nor pydicom's logged traceback), checked from
the headers before the voxels are read; in a batch each is reported at the end and the rest is written."""

from __future__ import annotations

import io
import logging
import os
import re
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, JPEGBaseline8Bit, PositronEmissionTomographyImageStorage, generate_uid

from restorer import medical, medical_checks
from restorer.cli import main
from restorer.errors import ImageReadError

from conftest import deadline, dicom_dataset

RAW = (np.arange(8 * 10, dtype=np.uint16).reshape(8, 10) * 50) % 4096


def _save(ds: Dataset, path) -> None:
    with warnings.catch_warnings():  # pydicom warns about the invalid values these tests store on purpose
        warnings.simplefilter("ignore")
        ds.save_as(path, enforce_file_format=True)


def _ct_file(path, slope: str | None = "1", intercept: str | None = "-1024", bits: int = 12, **extra):
    """One CT slice storing RescaleSlope / RescaleIntercept as the given text (None: left out)."""
    ds = dicom_dataset(CTImageStorage, "CT", RAW, bits, SeriesInstanceUID=generate_uid(), **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if slope is not None:
            ds.RescaleSlope = slope
        if intercept is not None:
            ds.RescaleIntercept = intercept
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(ds, path)
    return path


def _jpeg_garbage(path):
    """A JPEG Baseline DICOM whose fragment is not a JPEG stream: every decoder fails on it."""
    ds = dicom_dataset(CTImageStorage, "CT", RAW[:8, :8].copy(), 12, SeriesInstanceUID=generate_uid())
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + b"garbage!" * 4])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    _save(ds, path)
    return path


def _read_error(path, **kwargs) -> str:
    with pytest.raises(ImageReadError) as caught:
        medical.read_volume(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------------
# DICOM rescale
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slope", "intercept", "expected"),
    [
        ("NaN", "0", "RescaleSlope (0028,1053) is nan"),
        ("inf", "0", "RescaleSlope (0028,1053) is inf"),
        ("-inf", "0", "RescaleSlope (0028,1053) is -inf"),
        ("0", "-1024", "RescaleSlope (0028,1053) is 0, which would make every pixel -1024"),
        ("1e300", "0", "RescaleSlope (0028,1053) 1e+300 with RescaleIntercept (0028,1052) 0 maps"),
        ("1e30", "0", "to as far as 4.09e+33"),
        ("1e-300", "0", "RescaleSlope (0028,1053) 1e-300 is below 1e-20"),
        ("1", "NaN", "RescaleIntercept (0028,1052) is nan"),
        ("1", "-inf", "RescaleIntercept (0028,1052) is -inf"),
        ("1", "1e15", "RescaleIntercept (0028,1052) 1e+15 maps the stored values 0..4095"),
        ("1\\2", "0", "RescaleSlope (0028,1053) is '[1, 2]', not one number"),
    ],
)
def test_damaged_dicom_rescale_is_a_clear_error(tmp_path, slope, intercept, expected):
    path = _ct_file(tmp_path / "scan.dcm", slope, intercept)
    message = _read_error(path)
    assert message.startswith(f"Cannot use DICOM {path}: ") and expected in message


@pytest.mark.parametrize(
    ("slope", "intercept", "bits", "factor", "offset"),
    [
        ("0.5", "-1024", 12, 0.5, -1024.0),
        (None, None, 12, 1.0, 0.0),  # absent: the identity
        ("", "", 12, 1.0, 0.0),  # present but empty: the identity too
        ("1e-12", "0", 16, 1e-12, 0.0),  # tiny, as susceptibility maps store plain numbers
        ("1000", "0", 16, 1000.0, 0.0),  # 65535 * 1000: large, still a physical value
    ],
)
def test_sane_dicom_rescale_is_read(tmp_path, slope, intercept, bits, factor, offset):
    volume = medical.read_volume(_ct_file(tmp_path / "scan.dcm", slope, intercept, bits))
    expected = (RAW.astype(np.float64) * factor + offset).astype(np.float32)
    np.testing.assert_array_equal(volume.values[0], expected)


def test_damaged_rescale_in_a_multi_frame_functional_group_names_the_frame(tmp_path):
    raw = np.stack([np.full((6, 6), v, np.uint16) for v in (10, 20, 30)])
    ds = dicom_dataset(CTImageStorage, "CT", raw, 12, SeriesInstanceUID=generate_uid())
    groups = []
    for slope in ("2", "NaN", "2"):
        transform = Dataset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            transform.RescaleSlope, transform.RescaleIntercept = slope, "0"
        group = Dataset()
        group.PixelValueTransformationSequence = [transform]
        groups.append(group)
    ds.PerFrameFunctionalGroupsSequence = groups
    _save(ds, tmp_path / "mf.dcm")
    message = _read_error(tmp_path / "mf.dcm")
    assert "mf.dcm (frame 2's Pixel Value Transformation): RescaleSlope (0028,1053) is nan" in message

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups[1].PixelValueTransformationSequence[0].RescaleSlope = "3"
    _save(ds, tmp_path / "mf.dcm")
    np.testing.assert_array_equal(medical.read_volume(tmp_path / "mf.dcm").values[:, 0, 0], [20, 60, 60])


def test_a_damaged_rescale_in_one_file_of_a_series_names_that_file(tmp_path, make_dicom_series):
    make_dicom_series(tmp_path / "series", "CT", slices=3, rows=8, cols=8)
    bad = tmp_path / "series" / "slice1.dcm"
    ds = pydicom.dcmread(bad)
    ds.RescaleSlope = "0"
    _save(ds, bad)
    message = _read_error(tmp_path / "series")
    assert f"Cannot use DICOM {bad}: RescaleSlope (0028,1053) is 0" in message


def test_a_pet_suv_factor_from_a_damaged_weight_keeps_bq_per_ml(tmp_path):
    info = Dataset()
    info.RadionuclideTotalDose, info.RadionuclideHalfLife = 3.7e8, 6586.2
    ds = dicom_dataset(
        PositronEmissionTomographyImageStorage,
        "PT",
        np.full((4, 4), 1000, np.uint16),
        16,
        SeriesInstanceUID=generate_uid(),
        Units="BQML",
        DecayCorrection="ADMIN",
        PatientWeight=-70,  # a negative factor used to give negative SUVs without a word
    )
    ds.RadiopharmaceuticalInformationSequence = [info]
    _save(ds, tmp_path / "pet.dcm")
    volume = medical.read_volume(tmp_path / "pet.dcm")
    assert volume.units == "BQML" and volume.notes
    np.testing.assert_array_equal(volume.values, 1000.0)


# ---------------------------------------------------------------------------------------------------
# NIfTI scaling
# ---------------------------------------------------------------------------------------------------


def _nifti_scaled(path, slope: float, inter: float, dtype=np.int16, image_class=nib.Nifti1Image):
    data = np.arange(10 * 8 * 2, dtype=dtype).reshape(10, 8, 2)
    image = image_class(data, np.eye(4))
    image.header["scl_slope"], image.header["scl_inter"] = slope, inter
    nib.save(image, str(path))
    return data


@pytest.mark.parametrize(
    ("slope", "inter", "dtype", "image_class", "expected"),
    [
        (np.inf, 0.0, np.int16, nib.Nifti1Image, "scl_slope is inf"),
        (-np.inf, 0.0, np.int16, nib.Nifti1Image, "scl_slope is -inf"),
        (2.0, np.nan, np.int16, nib.Nifti1Image, "scl_inter is nan (with scl_slope 2)"),
        (2.0, np.inf, np.int16, nib.Nifti1Image, "scl_inter is inf (with scl_slope 2)"),
        (1e30, 0.0, np.int16, nib.Nifti1Image, "1e+30 with scl_inter 0 maps the stored values -32768..32767"),
        (1e-30, 0.0, np.int16, nib.Nifti1Image, "scl_slope 1e-30 is below 1e-20"),
        (1.0, 1e14, np.uint8, nib.Nifti1Image, "scl_inter 1e+14 maps"),
        (1e300, 0.0, np.float32, nib.Nifti2Image, "scl_slope 1e+300"),  # float64 scaling fields
    ],
)
def test_damaged_nifti_scaling_is_a_clear_error(tmp_path, slope, inter, dtype, image_class, expected):
    path = tmp_path / "scaled.nii.gz"
    _nifti_scaled(path, slope, inter, dtype, image_class)
    message = _read_error(path)
    assert message.startswith(f"Cannot use NIfTI {path}: ") and expected in message


@pytest.mark.parametrize("slope", [0.0, np.nan])
def test_nifti_slope_zero_or_nan_still_means_unscaled_as_nibabel_reads_it(tmp_path, slope):
    path = tmp_path / "plain.nii"
    data = _nifti_scaled(path, slope, 5.0)
    stored = medical_checks.nifti_header(path)
    assert float(stored["scl_slope"]) == 0 or np.isnan(stored["scl_slope"])  # as written, not reset
    volume = medical.read_volume(path)
    np.testing.assert_array_equal(volume.values, data.transpose(2, 1, 0))  # the intercept is ignored too
    np.testing.assert_array_equal(volume.values, nib.load(str(path)).get_fdata().transpose(2, 1, 0))


# ---------------------------------------------------------------------------------------------------
# Voxel limit
# ---------------------------------------------------------------------------------------------------


def test_nifti_above_the_voxel_limit_is_refused_from_its_header(tmp_path, make_nifti, monkeypatch):
    make_nifti(tmp_path / "vol.nii", shape=(20, 16, 4))  # 1280 voxels
    message = _read_error(tmp_path / "vol.nii", max_voxels=1000)
    assert "vol.nii: 20 x 16 x 4 = 1,280 voxels is more than the limit of 1,000" in message
    assert "--max-voxels" in message and "MAX_VOLUME_VOXELS" in message
    assert medical.read_volume(tmp_path / "vol.nii", max_voxels=1280).values.shape == (4, 16, 20)
    assert medical.read_volume(tmp_path / "vol.nii", max_voxels=0).values.shape == (4, 16, 20)

    monkeypatch.setattr(medical_checks, "MAX_VOLUME_VOXELS", 1000)  # the default is read at call time
    assert "limit of 1,000" in _read_error(tmp_path / "vol.nii")
    assert len(medical.read_volumes(tmp_path / "vol.nii", max_voxels=0)) == 1

    # The header alone decides: a file whose voxels are cut off is refused for its size, not its damage.
    whole = (tmp_path / "vol.nii").read_bytes()
    (tmp_path / "cut.nii").write_bytes(whole[: len(whole) // 2])
    assert "more than the limit" in _read_error(tmp_path / "cut.nii", max_voxels=100)
    assert "damaged" in _read_error(tmp_path / "cut.nii", max_voxels=0)


def test_dicom_above_the_voxel_limit_is_refused_before_any_pixel_data_is_read(
    tmp_path, make_dicom_series, monkeypatch
):
    make_dicom_series(tmp_path / "series", "CT", slices=3, rows=8, cols=10)  # 240 voxels
    reads = []
    original = medical._dcmread

    def spy(path, header_only=False):
        reads.append(header_only)
        return original(path, header_only)

    monkeypatch.setattr(medical, "_dcmread", spy)
    message = _read_error(tmp_path / "series", max_voxels=200)
    assert f"DICOM series {tmp_path / 'series'}: 10 x 8 x 3 = 240 voxels" in message
    assert "limit of 200" in message
    assert reads and all(reads)  # headers only: no file was read with its pixel data
    reads.clear()
    assert medical.read_volume(tmp_path / "series", max_voxels=240).values.shape == (3, 8, 10)
    assert reads.count(False) == 3

    raw = np.stack([np.full((6, 6), v, np.int16) for v in (1, 2, 3)])  # frames count as slices
    mf = dicom_dataset(CTImageStorage, "CT", raw, 16, SeriesInstanceUID=generate_uid())
    _save(mf, tmp_path / "mf.dcm")
    assert "6 x 6 x 3 = 108 voxels" in _read_error(tmp_path / "mf.dcm", max_voxels=100)


# ---------------------------------------------------------------------------------------------------
# pydicom's log
# ---------------------------------------------------------------------------------------------------


def test_undecodable_compressed_dicom_gives_one_line_and_no_logged_traceback(tmp_path, caplog):
    path = _jpeg_garbage(tmp_path / "broken.dcm")
    terminal = io.StringIO()  # what `restorer`'s logging.basicConfig would print to stderr
    handler = logging.StreamHandler(terminal)
    root = logging.getLogger()
    pydicom_logger = logging.getLogger("pydicom")
    before = (pydicom_logger.propagate, list(pydicom_logger.handlers))
    root.addHandler(handler)
    try:
        message = _read_error(path)
    finally:
        root.removeHandler(handler)
    assert message.startswith(f"Cannot read DICOM {path}: the pixel data cannot be decoded (")
    assert "JPEG Baseline" in message and "damaged" in message
    assert terminal.getvalue() == ""  # it used to hold pydicom's ERROR record and its traceback
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert (pydicom_logger.propagate, list(pydicom_logger.handlers)) == before

    with caplog.at_level(logging.INFO, logger="restorer.medical_checks"):  # what `restorer -v` shows
        _read_error(path)
    forwarded = [r for r in caplog.records if r.name == "restorer.medical_checks"]
    assert forwarded and all(r.exc_info is None and "\n" not in r.getMessage() for r in forwarded)
    assert (pydicom_logger.propagate, list(pydicom_logger.handlers)) == before


def test_quiet_pydicom_restores_the_logger_when_nested_and_when_the_read_raises():
    logger = logging.getLogger("pydicom")
    before = (logger.propagate, list(logger.handlers))
    with pytest.raises(RuntimeError):
        with medical_checks.quiet_pydicom():
            with medical_checks.quiet_pydicom():
                assert logger.propagate is False
            assert logger.propagate is False  # the outer use still holds it
            raise RuntimeError("decoder failed")
    assert (logger.propagate, list(logger.handlers)) == before


# ---------------------------------------------------------------------------------------------------
# A batch: each bad volume reported at the end, the rest written, exit status 1
# ---------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("one_torch_thread")
def test_a_batch_reports_each_bad_volume_and_writes_the_rest(
    tmp_path, tiny_rwkv_zoo, make_dicom_series, make_nifti, capsys, caplog
):
    folder = tmp_path / "scans"
    make_nifti(folder / "good.nii", shape=(16, 16, 2), high=2000.0)  # 512 voxels
    make_nifti(folder / "big.nii", shape=(16, 16, 8), high=2000.0)  # 2048 voxels
    _ct_file(folder / "nan_slope" / "a.dcm", "NaN", "0")
    _jpeg_garbage(folder / "jpeg" / "broken.dcm")
    make_dicom_series(folder / "series", "CT", slices=2, rows=16, cols=16)
    out = tmp_path / "out"
    caplog.clear()  # pydicom warned while the damaged files were written above
    argv = ["infer", "--task", "ct_denoise", str(folder), "-o", str(out), "-m", "tiny-rwkv-ct-denoise", "-q"]
    assert main([*argv, "--max-voxels", "1000"]) == 1
    err = capsys.readouterr().err
    assert "Wrote 2 result(s)" in err and "3 result(s) failed" in err
    assert re.search(r"big\.nii: 16 x 16 x 8 = 2,048 voxels is more than the limit of 1,000", err)
    assert "a.dcm: RescaleSlope (0028,1053) is nan" in err
    assert "broken.dcm: the pixel data cannot be decoded" in err
    assert "Traceback" not in err
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]
    assert (out / "good_out.nii").is_file()
    assert medical.read_volume(out / "series_out").values.shape == (2, 16, 16)
    assert not (out / "big_out.nii").exists() and not (out / "nan_slope_out").exists()


def test_max_voxels_is_refused_for_image_tasks_and_its_help_states_the_default(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    assert main(["infer", "--task", "sr_x2", str(tmp_path / "a.png"), "--max-voxels", "10"]) == 2
    assert "--max-voxels are for the medical tasks" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    assert str(medical_checks.MAX_VOLUME_VOXELS) in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# Files a medical run must refuse without hanging or losing the batch: FIFOs and devices, DICOM headers
# cut short after 'DICM', element lengths of gigabytes
# ---------------------------------------------------------------------------------------------------


def test_the_plan_reports_special_files_cut_headers_and_huge_elements(
    tmp_path, make_dicom_series, make_nifti, monkeypatch
):
    from pydicom.uid import BasicTextSRStorage

    from restorer.engine.medical_runner import plan_medical_jobs

    folder = tmp_path / "in"
    make_dicom_series(folder / "series", "CT", slices=2, rows=8, cols=8)
    make_nifti(folder / "good.nii", shape=(8, 8, 1))
    whole = (folder / "series" / "slice0.dcm").read_bytes()
    for cut in (132, 200, 300):  # right after 'DICM', inside the file meta, inside the dataset
        (folder / f"cut{cut}").mkdir()
        (folder / f"cut{cut}" / "slice.dcm").write_bytes(whole[:cut])
    report = dicom_dataset(BasicTextSRStorage, "SR", RAW)  # a complete object that holds no image
    for keyword in ("Rows", "Columns", "PixelData"):
        delattr(report, keyword)
    (folder / "report").mkdir()
    _save(report, folder / "report" / "sr.dcm")
    (folder / "huge.dcm").write_bytes(bytes(128) + b"DICM" + bytes(64))
    os.mkfifo(folder / "pipe.dcm")
    os.mkfifo(folder / "pipe.nii")
    os.mkfifo(folder / "pipe.bin")  # nothing we would read by its name: skipped, never opened
    (folder / "zero.nii.gz").symlink_to("/dev/zero")
    read = pydicom.dcmread

    def dcmread(path, *args, **kwargs):  # what pydicom does under a memory limit on a huge element
        if str(path).endswith("huge.dcm"):
            raise MemoryError
        return read(path, *args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    with deadline(60):
        plan = plan_medical_jobs([folder], tmp_path / "out")
    failed = {path.relative_to(folder).as_posix(): message for path, message in plan.failed}
    assert sorted(failed) == [
        "cut132/slice.dcm",
        "cut200/slice.dcm",
        "cut300/slice.dcm",
        "huge.dcm",
        "pipe.dcm",
        "pipe.nii",
        "zero.nii.gz",
    ]
    assert all("cut short or damaged" in failed[f"cut{cut}/slice.dcm"] for cut in (132, 200, 300))
    assert "an element declares more data than can be held in memory" in failed["huge.dcm"]
    assert failed["pipe.nii"].endswith("it is a FIFO, not a regular file")
    assert failed["zero.nii.gz"].endswith("it is a device, not a regular file")
    assert sorted(p.name for p in plan.skipped) == ["pipe.bin", "sr.dcm"]
    assert sorted((job.kind, job.source.name) for job in plan.jobs) == [
        ("dicom_series", "series"),
        ("nifti", "good.nii"),
    ]
    # the readers refuse them too (the web app and the library call these directly)
    with deadline(60):
        with pytest.raises(ImageReadError, match="it is a FIFO, not a regular file"):
            medical.read_volume(folder / "pipe.nii")
        with pytest.raises(ImageReadError, match="more data than can be held in memory"):
            medical.read_volume(folder / "huge.dcm")
        with pytest.raises(ImageReadError, match="cut short or damaged"):
            medical.read_volume(folder / "cut300")
