"""`restorer infer` on the medical tasks: DICOM series, single DICOM files, NIfTI and plain images go
through a tiny one-channel Restore-RWKV slice by slice and come back in the same format and geometry,
with previews, untouched inputs, and a bad file reported at the end while the others are written."""

from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from restorer import medical
from restorer.cli import main
from restorer.engine.medical_runner import plan_medical_jobs
from restorer.engine.runner import build_restorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digest(folder) -> dict[str, str]:
    """Every file under ``folder`` (or the file itself) and its SHA-256: proof the input is untouched."""
    paths = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def _expected(entry_name: str, volume: medical.MedicalVolume, modality: str, upscale: int = 1) -> np.ndarray:
    """The same model run directly, untiled, through medical.map_slices: what the files must hold."""
    from restorer import zoo

    restorer = build_restorer(zoo.get_entry(entry_name, 1), device="cpu", tile=0)
    return medical.map_slices(volume, restorer.run_array, modality, upscale=upscale)


def test_ct_dicom_series_is_written_back_as_a_dicom_series_with_previews(
    tmp_path, tiny_rwkv_zoo, make_dicom_series, capsys
):
    series_dir = tmp_path / "ct"
    make_dicom_series(series_dir, "CT", slices=3, rows=32, cols=40)
    before = _digest(series_dir)
    out = tmp_path / "out"
    argv = ["infer", "--task", "ct_denoise", str(series_dir), "-o", str(out), "-m", "tiny-rwkv-ct-denoise"]
    assert main([*argv, "-t", "0", "-q"]) == 0
    assert _digest(series_dir) == before

    target = out / "ct_out"
    assert sorted(p.name for p in target.iterdir()) == ["slice0.dcm", "slice1.dcm", "slice2.dcm"]
    source = medical.read_volume(series_dir)
    result = medical.read_volume(target)
    assert result.kind == "dicom" and result.modality == "CT" and result.values.shape == (3, 32, 40)
    assert result.pixel_spacing == source.pixel_spacing
    # What the files hold is the network's output in HU (stored as integers: rounding only).
    expected = _expected("tiny-rwkv-ct-denoise", source, "CT")
    np.testing.assert_allclose(result.values, expected, atol=0.51)
    assert np.abs(result.values - source.values).mean() > 1.0  # the network really changed it
    first_in, first_out = pydicom.dcmread(series_dir / "slice0.dcm"), pydicom.dcmread(target / "slice0.dcm")
    assert first_out.SeriesInstanceUID != first_in.SeriesInstanceUID
    assert "ct_denoise tiny-rwkv-ct-denoise" in first_out.DerivationDescription

    previews = sorted((out / "ct_out_preview").iterdir())
    assert [p.name for p in previews] == ["0000.png", "0001.png", "0002.png"]
    assert np.asarray(Image.open(previews[0])).shape == (32, 40)
    assert "Wrote 1 result(s)" in capsys.readouterr().err


def test_mri_sr_x2_on_nifti_doubles_the_grid_and_halves_the_spacing(tmp_path, tiny_rwkv_zoo, make_nifti):
    source_path = tmp_path / "in" / "brain.nii.gz"
    make_nifti(source_path, shape=(20, 16, 2))
    before = _digest(source_path)
    out = tmp_path / "out"
    argv = ["infer", "--task", "mri_sr_x2", str(source_path), "-o", str(out), "-m", "tiny-rwkv-mri-sr-x2"]
    assert main([*argv, "-t", "0", "--previews", "middle", "-q"]) == 0
    assert _digest(source_path) == before

    written = nib.load(str(out / "brain_out.nii.gz"))
    original = nib.load(str(source_path))
    assert written.shape == (40, 32, 2)
    assert written.header.get_zooms() == pytest.approx((1.0, 0.75, 3.0))
    expected_affine = original.affine.copy()
    expected_affine[:3, :2] /= 2  # k-space zero-filling keeps the first voxel centre in place
    np.testing.assert_allclose(written.affine, expected_affine)
    source = medical.read_volume(source_path)
    expected = _expected("tiny-rwkv-mri-sr-x2", source, "MRI", upscale=2)
    np.testing.assert_allclose(medical.read_volume(out / "brain_out.nii.gz").values, expected, atol=1e-2)
    preview = np.asarray(Image.open(out / "brain_out_preview.png"))
    assert preview.shape == (32, 40)  # rows run along the second voxel axis


def test_mri_sr_x4_on_a_single_dicom_file(tmp_path, tiny_rwkv_zoo, make_dicom_series):
    make_dicom_series(tmp_path / "mr", "MR", slices=1, rows=8, cols=10)
    single = tmp_path / "mr" / "slice0.dcm"
    out = tmp_path / "out"
    argv = ["infer", "--task", "mri_sr_x4", str(single), "-o", str(out), "-m", "tiny-rwkv-mri-sr-x4", "-q"]
    assert main(argv) == 0
    written = pydicom.dcmread(out / "slice0_out.dcm")
    assert (written.Rows, written.Columns) == (32, 40)
    assert [float(v) for v in written.PixelSpacing] == pytest.approx([0.175, 0.2])
    assert (out / "slice0_out_preview" / "0000.png").is_file()


def test_all_in_one_needs_a_modality_for_nifti_and_a_wrong_one_is_refused(
    tmp_path, tiny_rwkv_zoo, make_nifti, capsys
):
    path = tmp_path / "pet.nii"
    make_nifti(path, shape=(16, 16, 1), high=15.0)
    out = tmp_path / "out"
    base = ["infer", str(path), "-o", str(out), "-q"]
    assert main([*base, "--task", "all_in_one", "-m", "tiny-rwkv-all-in-one"]) == 2
    assert "--modality" in capsys.readouterr().err
    assert not out.exists()  # refused before any model ran
    assert main([*base, "--task", "ct_denoise", "--modality", "MRI"]) == 2
    assert "expects CT" in capsys.readouterr().err
    assert main([*base, "--task", "all_in_one", "-m", "tiny-rwkv-all-in-one", "--modality", "pet"]) == 0
    assert nib.load(str(out / "pet_out.nii")).shape == (16, 16, 1)


def test_a_bad_file_in_a_folder_is_reported_and_the_others_are_written(
    tmp_path, tiny_rwkv_zoo, make_dicom_series, make_nifti, capsys
):
    folder = tmp_path / "scans"
    make_nifti(folder / "good.nii", shape=(16, 16, 2), high=2000.0)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    make_dicom_series(folder / "series", "CT", slices=2, rows=16, cols=16)
    (folder / "series" / "damaged.dcm").write_bytes(b"\x00" * 64)
    (folder / "notes.txt").write_text("not an image")
    Image.fromarray(np.arange(16 * 24, dtype=np.uint8).reshape(16, 24)).save(folder / "scout.png")
    before = _digest(folder)
    out = tmp_path / "out"
    argv = ["infer", "--task", "ct_denoise", str(folder), "-o", str(out), "-m", "tiny-rwkv-ct-denoise", "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 result(s) failed" in err and "broken.nii.gz" in err and "damaged.dcm" in err
    assert "skipping" in err and "notes.txt" in err
    assert _digest(folder) == before

    assert nib.load(str(out / "good_out.nii")).shape == (16, 16, 2)
    series = medical.read_volume(out / "series_out")
    assert series.values.shape == (2, 16, 16)
    assert sorted(p.name for p in (out / "series_out").iterdir()) == ["slice0.dcm", "slice1.dcm"]
    scout = np.asarray(Image.open(out / "scout_out.png"))
    assert scout.shape == (16, 24) and scout.dtype == np.uint8
    assert not (out / "broken_out.nii.gz").exists()


def test_plain_colour_image_for_mri_sr_becomes_a_larger_gray_image(tmp_path, tiny_rwkv_zoo, rgb_image):
    Image.fromarray(rgb_image).save(tmp_path / "slice.png")  # 48x56 RGB
    out = tmp_path / "out"
    argv = ["infer", "--task", "mri_sr_x2", str(tmp_path / "slice.png"), "-o", str(out)]
    assert main([*argv, "-m", "tiny-rwkv-mri-sr-x2", "-q"]) == 0
    result = Image.open(out / "slice_out.png")
    assert result.mode == "L" and result.size == (112, 96)


def test_plan_names_several_series_in_one_folder_and_mirrors_sub_folders(
    tmp_path, make_dicom_series, make_nifti
):
    make_dicom_series(tmp_path / "in" / "study", "CT", slices=2, rows=8, cols=8, seed=1)
    for path in (tmp_path / "in" / "study").iterdir():  # a second series beside the first
        path.rename(path.with_name(f"a_{path.name}"))
    make_dicom_series(tmp_path / "in" / "study", "CT", slices=2, rows=8, cols=8, seed=2)
    for index in range(2):  # give the second series its own number
        path = tmp_path / "in" / "study" / f"slice{index}.dcm"
        ds = pydicom.dcmread(path)
        ds.SeriesNumber = 7
        ds.save_as(path, enforce_file_format=True)
    make_nifti(tmp_path / "in" / "sub" / "vol.nii", shape=(8, 8, 1))
    plan = plan_medical_jobs([tmp_path / "in"], tmp_path / "out")
    assert not plan.failed
    kinds = sorted((job.kind, job.label, str(job.target_dir.relative_to(tmp_path))) for job in plan.jobs)
    assert kinds == [
        ("dicom_series", "study_series2", "out"),
        ("dicom_series", "study_series7", "out"),
        ("nifti", "", "out/sub"),
    ]
    assert sorted(len(job.files) for job in plan.jobs if job.kind == "dicom_series") == [2, 2]
