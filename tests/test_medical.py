"""DICOM and NIfTI: tiny synthetic files read slice-wise, written back with values, windows and geometry
kept, new DICOM UIDs, PNG previews, and clear errors for damaged files."""

from __future__ import annotations

import gzip
import math

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    generate_uid,
)

from restorer import medical
from restorer.errors import ImageReadError, RestorerError, UsageError

from conftest import dicom_dataset

ROWS, COLS = 16, 20


def _ct_series(folder, study_uid, series_uid, frame_uid, seed=0):
    """Three CT slices (12-bit, intercept -1024) saved under names that do not follow slice order."""
    rng = np.random.default_rng(seed)
    raws = [rng.integers(0, 4096, size=(ROWS, COLS)).astype(np.uint16) for _ in range(3)]
    folder.mkdir(parents=True, exist_ok=True)
    names = {0: "b.dcm", 1: "c", 2: "a.dcm"}  # z = 0, 5, 10 mm; "c" has no suffix (found by its marker)
    for index, raw in enumerate(raws):
        ds = dicom_dataset(
            CTImageStorage,
            "CT",
            raw,
            12,
            StudyInstanceUID=study_uid,
            SeriesInstanceUID=series_uid,
            FrameOfReferenceUID=frame_uid,
            SeriesDescription="Abdomen low dose",
            SeriesNumber=3,
            InstanceNumber=3 - index,  # contradicts the positions: positions must win
            ImagePositionPatient=[-100.0, -120.0, 5.0 * index],
            RescaleSlope=1,
            RescaleIntercept=-1024,
            WindowCenter=40,
            WindowWidth=400,
        )
        ds.save_as(folder / names[index], enforce_file_format=True)
    (folder / "README.txt").write_text("not an image")
    return raws


def test_dicom_series_round_trip_keeps_values_windows_geometry_with_new_uids(tmp_path):
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    raws = _ct_series(tmp_path / "in", study, series, frame)
    volume = medical.read_volume(tmp_path / "in")
    assert volume.kind == "dicom" and volume.modality == "CT" and volume.units == "HU"
    assert volume.values.shape == (3, ROWS, COLS) and volume.values.dtype == np.float32
    for index, raw in enumerate(raws):  # sorted along the slice normal, rescaled to HU
        np.testing.assert_array_equal(volume.values[index], raw.astype(np.float32) - 1024)
    assert volume.windows == [medical.Window(40.0, 400.0)] * 3
    assert volume.pixel_spacing == (0.7, 0.8)

    result = volume.values + 7.0
    result[1, 0, 0] = 3100.0  # 4124 stored: beyond 12 bits, so Bits Stored must widen
    target = medical.output_target(volume, tmp_path / "out")
    assert target == tmp_path / "out" / "in_restored"
    written = medical.write_volume(volume, result, target, note="ct_denoise test")
    assert sorted(p.name for p in written.files) == ["a.dcm", "b.dcm", "c"]

    back = medical.read_volume(target)
    np.testing.assert_array_equal(back.values, result)
    assert back.windows == volume.windows
    originals = {f: pydicom.dcmread(tmp_path / "in" / f) for f in ("a.dcm", "b.dcm", "c")}
    outputs = {f: pydicom.dcmread(target / f) for f in ("a.dcm", "b.dcm", "c")}
    new_series = {ds.SeriesInstanceUID for ds in outputs.values()}
    assert len(new_series) == 1 and series not in new_series
    assert len({ds.SOPInstanceUID for ds in outputs.values()}) == 3
    for name, ds in outputs.items():
        old = originals[name]
        assert ds.SOPInstanceUID != old.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.StudyInstanceUID == study and ds.FrameOfReferenceUID == frame
        for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
            assert list(np.atleast_1d(ds[key].value)) == list(np.atleast_1d(old[key].value)), key
        assert (ds.Rows, ds.Columns) == (ROWS, COLS)
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"] and ds.ImageType[2] == "AXIAL"
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
        assert "restorer ct_denoise test" in ds.DerivationDescription
        assert ds.SeriesDescription.startswith("Abdomen low dose restorer")
    assert outputs["c"].BitsStored == 16 and outputs["a.dcm"].BitsStored == 12

    # previews: one 8-bit PNG per slice, windowed with the file's window (40 / 400 HU)
    assert [p.name for p in written.previews] == ["0000.png", "0001.png", "0002.png"]
    assert written.previews[0].parent == tmp_path / "out" / "in_restored_preview"
    preview = np.asarray(Image.open(written.previews[0]))
    assert preview.dtype == np.uint8 and preview.shape == (ROWS, COLS)
    expected = np.clip((result[0] - (40 - 200)) / 400, 0, 1) * 255
    np.testing.assert_allclose(preview, expected, atol=0.51)


def test_single_dicom_file_super_resolution_geometry(tmp_path):
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8) * 50
    ds = dicom_dataset(
        MRImageStorage,
        "MR",
        raw,
        16,
        StudyInstanceUID=generate_uid(),
        SeriesInstanceUID=generate_uid(),
        ImagePositionPatient=[10.0, 20.0, 30.0],
        ImageOrientationPatient=[0, 1, 0, 0, 0, -1],  # sagittal
        PixelSpacing=[2.0, 1.0],
    )
    ds.save_as(tmp_path / "mr.dcm", enforce_file_format=True)
    volume = medical.read_volume(tmp_path / "mr.dcm")
    assert volume.modality == "MRI" and volume.windows == [None]
    np.testing.assert_array_equal(volume.values[0], raw)

    upsampled = np.repeat(np.repeat(volume.values, 2, axis=1), 2, axis=2)
    for alignment, shift in (("origin", 0.0), ("center", -0.25)):
        target = tmp_path / f"mr_{alignment}.dcm"
        medical.write_volume(
            volume, upsampled, target, note="mri_sr_x2", alignment=alignment, previews="middle"
        )
        out = pydicom.dcmread(target)
        assert (out.Rows, out.Columns) == (16, 16)
        assert [float(v) for v in out.PixelSpacing] == [1.0, 0.5]
        # first pixel centre moves by `shift` old pixels along the row (+y, 1 mm) and column (-z, 2 mm)
        expected = np.array([10.0, 20.0 + shift * 1.0, 30.0 - shift * 2.0])
        np.testing.assert_allclose(np.array(out.ImagePositionPatient, float), expected)
        np.testing.assert_array_equal(medical.read_volume(target).values, upsampled)
        assert (tmp_path / f"mr_{alignment}_preview.png").is_file()


def test_pet_bq_per_ml_is_read_as_suv_and_written_back_in_bq_per_ml(tmp_path):
    folder = tmp_path / "pet"
    folder.mkdir()
    info = Dataset()
    info.RadionuclideTotalDose = 3.7e8
    info.RadionuclideHalfLife = 6586.2
    info.RadiopharmaceuticalStartTime = "100000"
    raws = [np.full((4, 4), 1000, np.uint16), np.full((4, 4), 3000, np.uint16)]
    slopes = [0.5, 0.25]
    series = generate_uid()
    for index, (raw, slope) in enumerate(zip(raws, slopes)):
        ds = dicom_dataset(
            PositronEmissionTomographyImageStorage,
            "PT",
            raw,
            16,
            SeriesInstanceUID=series,
            StudyInstanceUID=generate_uid(),
            ImagePositionPatient=[0.0, 0.0, float(index)],
            Units="BQML",
            DecayCorrection="START",
            PatientWeight=70,
            SeriesDate="20240101",
            SeriesTime="110000",
            RescaleSlope=slope,
            RescaleIntercept=0,
        )
        ds.RadiopharmaceuticalInformationSequence = [info]
        ds.save_as(folder / f"{index}.dcm", enforce_file_format=True)
    factor = 70_000 / (3.7e8 * 2 ** (-3600 / 6586.2))  # one hour of decay
    volume = medical.read_volume(folder)
    assert volume.units == "SUVbw" and volume.modality == "PET" and not volume.notes
    np.testing.assert_allclose(volume.values[0], 500 * factor, rtol=1e-6)
    np.testing.assert_allclose(volume.values[1], 750 * factor, rtol=1e-6)

    result = volume.values * 40.0  # 1000 * 0.5 * 40 = 20000 fits uint16 with slope .5; slice 1 needs a refit
    medical.write_volume(volume, result, tmp_path / "out", note="pet_synthesis", previews="none")
    back = medical.read_volume(tmp_path / "out")
    np.testing.assert_allclose(back.values, result, rtol=1e-4)
    stored = [pydicom.dcmread(tmp_path / "out" / f"{i}.dcm") for i in range(2)]
    assert float(stored[0].RescaleSlope) == 0.5 and float(stored[1].RescaleSlope) != 0.25


def test_multi_frame_dicom(tmp_path):
    raw = np.stack([np.full((6, 6), v, np.int16) for v in (-5, 0, 9)])
    ds = dicom_dataset(
        CTImageStorage, "CT", raw, 16, SeriesInstanceUID=generate_uid(), RescaleSlope=2, RescaleIntercept=1
    )
    ds.save_as(tmp_path / "mf.dcm", enforce_file_format=True)
    volume = medical.read_volume(tmp_path / "mf.dcm")
    np.testing.assert_array_equal(volume.values[:, 0, 0], [-9, 1, 19])
    medical.write_volume(volume, volume.values + 2, tmp_path / "mf_out.dcm", note="x", previews="none")
    back = pydicom.dcmread(tmp_path / "mf_out.dcm")
    assert int(back.NumberOfFrames) == 3
    np.testing.assert_array_equal(medical.read_volume(tmp_path / "mf_out.dcm").values[:, 0, 0], [-7, 3, 21])


def _nifti(path, raw, slope=2.0, inter=-100.0):
    affine = np.array(
        [[0.0, -0.9, 0.1, 30.0], [0.8, 0.0, 0.0, -40.0], [0.0, 0.05, 2.5, 12.0], [0, 0, 0, 1]]
    )  # oblique, anisotropic
    image = nib.Nifti1Image(raw, affine)
    image.header.set_slope_inter(slope, inter)
    image.header["cal_min"], image.header["cal_max"] = -50.0, 350.0
    image.set_sform(affine, code=2)
    image.set_qform(affine, code=1)
    nib.save(image, str(path))
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_values_window_header_and_affine(tmp_path, suffix):
    raw = np.random.default_rng(1).integers(-500, 1500, size=(COLS, ROWS, 3)).astype(np.int16)
    affine = _nifti(tmp_path / f"head{suffix}", raw)
    volume = medical.read_volume(tmp_path / f"head{suffix}")
    assert volume.kind == "nifti" and volume.modality is None and volume.values.shape == (3, ROWS, COLS)
    np.testing.assert_array_equal(
        volume.values[2, 5, 7], raw[7, 5, 2] * 2.0 - 100.0
    )  # slice k = data[:, :, k].T
    assert volume.windows[0] == medical.Window(150.0, 400.0)

    result = volume.values + 4.0  # a multiple of the slope: exactly representable
    result[0, 0, 0] = 10.3  # not: rounds to the nearest step of 2
    target = medical.output_target(volume, tmp_path / "out")
    assert target.name == f"head_restored{suffix}"
    written = medical.write_volume(volume, result, target, note="mri denoise")
    back_image = nib.load(str(target))
    assert back_image.get_data_dtype() == np.int16
    assert (back_image.dataobj.slope, back_image.dataobj.inter) == (2.0, -100.0)
    np.testing.assert_allclose(back_image.affine, affine)
    assert int(back_image.header["sform_code"]) == 2 and int(back_image.header["qform_code"]) == 1
    assert (float(back_image.header["cal_min"]), float(back_image.header["cal_max"])) == (-50.0, 350.0)
    assert b"restorer mri denoise" in back_image.header["descrip"].item()
    back = medical.read_volume(target).values
    np.testing.assert_array_equal(back.ravel()[1:], result.ravel()[1:])
    assert back[0, 0, 0] == 10.0
    assert len(written.previews) == 3 and suffix.endswith("gz") == (target.read_bytes()[:2] == b"\x1f\x8b")


def test_nifti_super_resolution_affine_and_2d_files(tmp_path):
    raw = np.arange(ROWS * COLS, dtype=np.float32).reshape(COLS, ROWS)
    affine = np.diag([0.5, 0.6, 3.0, 1.0])
    affine[:3, 3] = [1.0, 2.0, 3.0]
    nib.save(nib.Nifti1Image(raw, affine), str(tmp_path / "slice.nii"))
    volume = medical.read_volume(tmp_path / "slice.nii")
    assert volume.values.shape == (1, ROWS, COLS) and volume.pixel_spacing == pytest.approx((0.6, 0.5))
    up = np.repeat(np.repeat(volume.values, 4, axis=1), 4, axis=2)
    target = tmp_path / "sr.nii"
    medical.write_volume(volume, up, target, note="mri_sr_x4", alignment="center", previews="none")
    image = nib.load(str(target))
    assert image.shape == (COLS * 4, ROWS * 4)  # still a 2-D file
    np.testing.assert_allclose(image.header.get_zooms(), (0.125, 0.15))
    shift = (1 / 4 - 1) / 2  # -0.375 old voxels along i and j
    np.testing.assert_allclose(image.affine[:3, 3], [1.0 + shift * 0.5, 2.0 + shift * 0.6, 3.0])
    np.testing.assert_allclose(np.diag(image.affine)[:3], [0.125, 0.15, 3.0])
    np.testing.assert_array_equal(medical.read_volume(target).values, up)


def test_damaged_files_give_clear_errors(tmp_path):
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 50 + b"hello")
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        medical.read_volume(tmp_path / "junk.dcm")

    raw = np.zeros((32, 32), np.uint16)
    dicom_dataset(CTImageStorage, "CT", raw, 12, SeriesInstanceUID=generate_uid()).save_as(
        tmp_path / "cut.dcm", enforce_file_format=True
    )
    data = (tmp_path / "cut.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 1000])  # pixel data cut short
    with pytest.raises(RestorerError, match="cut.dcm"):
        medical.read_volume(tmp_path / "cut.dcm")

    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ImageReadError, match="damaged or not a NIfTI"):
        medical.read_volume(tmp_path / "junk.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((64, 64, 8), np.float32), np.eye(4)), str(tmp_path / "whole.nii.gz"))
    whole = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "short.nii.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageReadError, match="short.nii.gz"):
        medical.read_volume(tmp_path / "short.nii.gz")
    (tmp_path / "short.nii").write_bytes(gzip.decompress(whole)[:500])  # header, then too little data
    with pytest.raises(ImageReadError, match="short.nii"):
        medical.read_volume(tmp_path / "short.nii")

    folder = tmp_path / "series"
    _ct_series(folder, generate_uid(), generate_uid(), generate_uid())
    (folder / "broken.dcm").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="broken.dcm"):
        medical.read_volume(folder)
    with pytest.raises(ImageReadError, match="No such file"):
        medical.read_volume(tmp_path / "missing.nii")


def test_folder_with_two_series(tmp_path):
    study = generate_uid()
    _ct_series(tmp_path / "exam", study, generate_uid(), generate_uid(), seed=1)
    second = dicom_dataset(
        MRImageStorage, "MR", np.ones((4, 4), np.uint16), 12, SeriesInstanceUID=generate_uid(), SeriesNumber=7
    )
    second.save_as(tmp_path / "exam" / "mr.dcm", enforce_file_format=True)
    with pytest.raises(UsageError, match="2 DICOM series"):
        medical.read_volume(tmp_path / "exam")
    volumes = medical.read_volumes(tmp_path / "exam")
    assert sorted(v.modality for v in volumes) == ["CT", "MRI"]
    assert sorted(v.name for v in volumes) == ["exam_series3", "exam_series7"]
    only_mr = medical.read_volume(tmp_path / "exam", series_uid=second.SeriesInstanceUID)
    assert only_mr.values.shape == (1, 4, 4)


def test_never_overwrites_the_input(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 2), np.float32), np.eye(4)), str(tmp_path / "a.nii"))
    volume = medical.read_volume(tmp_path / "a.nii")
    with pytest.raises(RestorerError, match="overwrite the input"):
        medical.write_volume(volume, volume.values, tmp_path / "a.nii", note="x")


def test_task_table_normalisation_and_modality():
    assert set(medical.MEDICAL_TASKS) == {
        "ct_denoise",
        "mri_sr_x2",
        "mri_sr_x4",
        "pet_synthesis",
        "all_in_one",
    }
    assert (
        medical.MEDICAL_TASKS["mri_sr_x4"].upscale == 4 and medical.MEDICAL_TASKS["ct_denoise"].upscale == 1
    )
    assert all(task.channels == 1 for task in medical.MEDICAL_TASKS.values())
    hu = np.array([-2000.0, -1024.0, 0.0, 1024.0, 3072.0, 5000.0])
    normalized = medical.normalize(hu, "CT")
    np.testing.assert_allclose(normalized, [0.0, 0.0, 0.25, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(medical.denormalize(normalized, "CT"), np.clip(hu, -1024, 3072))
    np.testing.assert_allclose(medical.normalize(np.array([10.0]), "PET"), [0.5])

    nifti = medical.MedicalVolume(
        np.zeros((1, 2, 2), np.float32), "nifti", medical.Path("x.nii"), None, "", [None], (1, 1)
    )
    with pytest.raises(UsageError, match="needs the modality"):
        medical.resolve_modality("all_in_one", nifti)
    assert medical.resolve_modality("all_in_one", nifti, override="MR") == "MRI"
    assert medical.resolve_modality("ct_denoise", nifti) == "CT"
    mr = medical.MedicalVolume(
        np.zeros((1, 2, 2), np.float32), "dicom", medical.Path("m"), "MRI", "", [None], (1, 1)
    )
    with pytest.raises(UsageError, match="expects CT"):
        medical.resolve_modality("ct_denoise", mr)
    with pytest.raises(UsageError, match="Unknown medical task"):
        medical.resolve_modality("ct_denoize", mr)


def test_map_slices_and_official_metrics():
    volume = medical.MedicalVolume(
        np.linspace(-1500, 3500, 2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8),
        "nifti",
        medical.Path("v.nii"),
        "CT",
        "HU",
        [None, None],
        (1, 1),
    )
    same = medical.map_slices(volume, lambda x: x, "CT")
    np.testing.assert_allclose(same, np.clip(volume.values, -1024, 3072), atol=1e-3)

    label = np.random.default_rng(0).uniform(-300, 400, size=(32, 32))
    perfect = medical.medical_metrics(label, label, "CT")
    assert perfect["psnr"] == math.inf and perfect["ssim"] == pytest.approx(1.0) and perfect["rmse"] == 0
    noisy = label + 5.0
    metrics = medical.medical_metrics(noisy, label, "CT")
    clipped_label, clipped_out = np.clip(label, -160, 240), np.clip(noisy, -160, 240)
    mse = np.mean((clipped_out - clipped_label) ** 2)
    data_range = clipped_label.max() - clipped_label.min()
    assert metrics["psnr"] == pytest.approx(10 * np.log10(data_range**2 / mse))
    assert metrics["rmse"] == pytest.approx(np.sqrt(mse)) and 0 < metrics["ssim"] < 1


def test_compressed_dicom_is_written_back_uncompressed(tmp_path):
    raw = np.arange(64, dtype=np.uint16).reshape(8, 8) * 30
    ds = dicom_dataset(
        CTImageStorage,
        "CT",
        raw,
        12,
        SeriesInstanceUID=generate_uid(),
        RescaleSlope=1,
        RescaleIntercept=-1024,
    )
    ds.compress(RLELossless)  # pydicom's own RLE codec: no extra decoder needed
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    volume = medical.read_volume(tmp_path / "rle.dcm")
    np.testing.assert_array_equal(volume.values[0], raw.astype(np.float32) - 1024)
    medical.write_volume(volume, volume.values + 1, tmp_path / "out.dcm", note="x", previews="none")
    assert pydicom.dcmread(tmp_path / "out.dcm").file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(
        medical.read_volume(tmp_path / "out.dcm").values[0], raw.astype(np.float32) - 1023
    )


def test_mri_sr_input_matches_the_training_degradation():
    """What mri_sr_x2 feeds the network for a low-resolution scan is what training made from the
    high-resolution one: k-space truncation == zero-filling the low-resolution acquisition."""
    from restorer.training.degradations import kspace_downsample, kspace_truncate

    high = np.random.default_rng(0).uniform(500, 3000, size=(32, 48)).astype(np.float32)
    low = kspace_downsample(high, 2)
    volume = medical.MedicalVolume(low[None], "nifti", medical.Path("lr.nii"), "MRI", "", [None], (2.0, 2.0))
    fed = []
    medical.map_slices(
        volume, lambda x: fed.append(x) or x, "MRI", upscale=medical.MEDICAL_TASKS["mri_sr_x2"].upscale
    )
    assert fed[0].shape == (32, 48, 1)
    np.testing.assert_allclose(fed[0][:, :, 0], medical.normalize(kspace_truncate(high, 2), "MRI"), atol=1e-6)


def test_nifti_result_beyond_the_data_type_gets_a_new_rescale(tmp_path):
    raw = np.arange(4 * 4 * 2, dtype=np.int16).reshape(4, 4, 2)
    _nifti(tmp_path / "small.nii", raw, slope=1.0, inter=0.0)
    volume = medical.read_volume(tmp_path / "small.nii")
    result = volume.values * 5000.0 - 20000.0  # up to 135000: no longer fits int16 with slope 1
    medical.write_volume(volume, result, tmp_path / "big.nii", note="x", previews="none")
    image = nib.load(str(tmp_path / "big.nii"))
    assert image.get_data_dtype() == np.int16 and image.dataobj.slope != 1.0
    step = image.dataobj.slope
    np.testing.assert_allclose(medical.read_volume(tmp_path / "big.nii").values, result, atol=step / 2 + 1e-3)


def test_nifti_with_nan_voxels_or_a_bad_gzip_crc_is_refused(tmp_path):
    """Issue 21: a NaN voxel used to turn a whole output slice to NaN with exit 0; a .nii.gz whose gzip
    CRC fails used to be accepted. Both are now clear read errors."""
    import gzip as gz

    import nibabel as nib

    from restorer.errors import ImageReadError
    from restorer.medical import read_volume

    volume = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    volume[4, 5, 1] = np.nan
    nan_file = tmp_path / "nan.nii"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(nan_file))
    with pytest.raises(ImageReadError, match=r"1 NaN or infinite voxel\(s\) in 1 of 3 slice"):
        read_volume(nan_file)
    good = tmp_path / "good.nii.gz"
    nib.save(nib.Nifti1Image(np.nan_to_num(volume), np.eye(4)), str(good))
    assert read_volume(good).values.shape == (3, 16, 16)
    raw = bytearray(good.read_bytes())
    raw[-8] ^= 0xFF  # the gzip trailer's CRC-32
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ImageReadError, match="Cannot read NIfTI"):
        read_volume(bad)
    assert gz.decompress(good.read_bytes())  # the good file is a valid gzip stream
