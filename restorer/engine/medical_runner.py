"""Run a one-channel medical model over DICOM files and series, NIfTI files and plain images.

The medical tasks (:data:`restorer.medical_tasks.MEDICAL_TASKS`) share the image path's engine: each
slice is normalised with its modality's range (:func:`restorer.medical.normalize`), up-sampled in
k-space first for the ``mri_sr_x*`` tasks (:func:`restorer.medical.map_slices`), and restored as an
``H x W x 1`` image by :meth:`Restorer.run_array` (tiled, any size). Results are written back in the
input's format with its geometry (:func:`restorer.medical.write_volume`), next to PNG previews.

Inputs are planned first (:func:`plan_medical_jobs`), reading DICOM headers only, so that one damaged
file costs only itself: it is recorded in the report and every other volume is still written, as the
image path does (:func:`restorer.engine.runner.process_files`). Folders are searched recursively
(DICOM exports keep each series in its own sub-folder), hidden entries skipped, and their structure is
mirrored under the output folder. Plain images (PNG, TIFF, ...) are taken as already normalised to
[0, 1]: colour ones are made gray (BT.601 luma) and run through the same network.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import pydicom

from restorer import io as rio
from restorer import medical
from restorer.engine.runner import Report, Restorer
from restorer.errors import ImageReadError, RestorerError, UsageError
from restorer.medical_checks import quiet_pydicom
from restorer.medical_tasks import MEDICAL_TASKS, MedicalTask

log = logging.getLogger(__name__)

PREVIEW_MODES = ("all", "middle", "none")
JobKind = Literal["nifti", "dicom_file", "dicom_series", "image"]


@dataclass(frozen=True)
class MedicalJob:
    """One thing to restore and the folder its result goes to.

    ``source`` is the file, or for a DICOM series the folder its files are in; ``files`` are a series'
    files (in any order: reading sorts them along the slice normal); ``label`` names the output when
    several series share a folder.
    """

    kind: JobKind
    source: Path
    target_dir: Path
    files: tuple[Path, ...] = ()
    label: str = ""


@dataclass
class MedicalPlan:
    """Jobs found in the inputs, files that are not images or volumes, and files that could not be read."""

    jobs: list[MedicalJob] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(medical.NIFTI_SUFFIXES)


def _is_dicom_candidate(path: Path) -> bool:
    # NIfTI and image suffixes are decided before this; the rest by suffix or the 'DICM' marker.
    return medical.is_medical_path(path)


def _walk(folder: Path, exclude: Path | None) -> list[Path]:
    """Files under ``folder`` (recursive, sorted, hidden entries and the ``exclude`` folder skipped)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude)
        )
        found += [root_path / name for name in sorted(files) if not name.startswith(".")]
    return found


def _series_header(path: Path) -> pydicom.Dataset:
    try:
        with quiet_pydicom():
            return pydicom.dcmread(str(path), stop_before_pixels=True)
    except pydicom.errors.InvalidDicomError as exc:
        raise ImageReadError(f"Cannot read DICOM {path}: not a DICOM file") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ImageReadError(f"Cannot read DICOM {path}: the file is damaged ({exc})") from exc
    except MemoryError:  # a huge element length (garbage after 'DICM'): this file fails, not the batch
        raise ImageReadError(medical.DICOM_TOO_LONG.format(path=path)) from None


def plan_medical_jobs(
    inputs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
) -> MedicalPlan:
    """Expand files and folders into jobs.

    A file is NIfTI (``.nii``/``.nii.gz``), a plain image (by suffix), DICOM (by suffix or its 'DICM'
    marker) or skipped. A folder is searched recursively: NIfTI files and images are one job each,
    DICOM files are grouped into series by *SeriesInstanceUID* (headers only) and each series is a job
    whose result is a folder; a DICOM file whose header cannot be read is recorded in ``failed``.
    Results keep the input's sub-folder under ``out_dir``; several series in one folder are named by
    their *SeriesNumber* (as :func:`restorer.medical.read_volumes` names them).
    """
    out_dir = Path(out_dir)
    exclude = out_dir.resolve()
    plan = MedicalPlan()
    seen: set[Path] = set()

    def classify(path: Path, target_dir: Path, series: dict[str, list[tuple[Path, pydicom.Dataset]]] | None):
        # Before anything opens it (a FIFO blocks pydicom and nibabel for good, /dev/zero never ends) or
        # resolves it (a link loop raises): a file we would read that is not a regular file fails here.
        problem = rio.regular_file_problem(path)
        if problem is not None:
            wanted = (
                series is None  # named on the command line
                or _is_nifti(path)
                or rio.is_image_file(path)
                or path.suffix.lower() in medical.DICOM_SUFFIXES
            )
            if wanted:
                plan.failed.append((path, f"Cannot read {path}: {problem}"))
            else:
                plan.skipped.append(path)
            return
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        if _is_nifti(path):
            plan.jobs.append(MedicalJob("nifti", path, target_dir))
        elif rio.is_image_file(path):
            plan.jobs.append(MedicalJob("image", path, target_dir))
        elif not _is_dicom_candidate(path):
            plan.skipped.append(path)
        elif series is None:  # a DICOM file given by itself: a one-file volume
            plan.jobs.append(MedicalJob("dicom_file", path, target_dir))
        else:
            try:
                header = _series_header(path)
            except RestorerError as exc:
                plan.failed.append((path, str(exc)))
                return
            if "Rows" not in header:
                problem = medical.damaged_dicom_header(header)
                if problem is not None:  # cut short after 'DICM': a damaged file, not a non-image one
                    plan.failed.append((path, f"Cannot read DICOM {path}: {problem}"))
                else:  # DICOMDIR, structured reports, presentation states
                    plan.skipped.append(path)
                return
            uid = str(header.get("SeriesInstanceUID", f"no-uid:{path.parent}"))
            series.setdefault(uid, []).append((path, header))

    for raw in inputs:
        root = Path(raw)
        if not root.is_dir():
            classify(root, out_dir, None)
            continue
        series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
        for path in _walk(root, exclude):
            classify(path, out_dir / path.parent.relative_to(root), series)
        per_folder: dict[Path, int] = {}
        for files in series.values():
            per_folder[files[0][0].parent] = per_folder.get(files[0][0].parent, 0) + 1
        for files in series.values():
            folder = files[0][0].parent
            label = ""
            if per_folder[folder] > 1:
                label = medical.series_label(folder, files[0][1])
            # The series' result is a folder named after its own folder, beside where that folder is.
            target_dir = out_dir if folder == root else out_dir / folder.parent.relative_to(root)
            plan.jobs.append(
                MedicalJob("dicom_series", folder, target_dir, tuple(p for p, _ in files), label)
            )
    return plan


def check_modality(task: str, plan: MedicalPlan, override: str | None) -> None:
    """Usage mistakes found before any model loads: an unknown or contradicting ``--modality``, and
    ``all_in_one`` on NIfTI (which never states its modality) without one."""
    spec = MEDICAL_TASKS[task]
    if override is not None:
        medical.resolve_modality(task, None, override)  # unknown, or not the task's own
    if spec.modality is None and override is None:
        nifti = [job.source for job in plan.jobs if job.kind == "nifti"]
        if nifti:
            raise UsageError(
                f"Task '{task}' needs the modality of NIfTI files (they do not state it), e.g. "
                f"{nifti[0]}: add --modality CT, MRI or PET"
            )


def read_job_volume(job: MedicalJob, max_voxels: int | None = None) -> medical.MedicalVolume:
    """Read a volume job (pixel data included); ``max_voxels`` as :func:`restorer.medical.read_volume`."""
    if job.kind == "dicom_series":
        volume = medical.read_dicom_series(
            list(job.files), job.source, from_folder=True, max_voxels=max_voxels
        )
        volume.label = job.label
        return volume
    return medical.read_volume(job.source, max_voxels=max_voxels)


def _slice_bar(total: int, progress: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, leave=False, disable=not progress or total < 2, dynamic_ncols=True)


def restore_volume(
    restorer: Restorer,
    job: MedicalJob,
    task: MedicalTask,
    *,
    modality_override: str | None = None,
    suffix: str = "out",
    previews: str = "all",
    protect: Sequence[Path] = (),
    progress: bool = False,
    on_message: Callable[[str], None] | None = None,
    max_voxels: int | None = None,
) -> medical.WrittenVolume:
    """Read, restore slice by slice, and write one DICOM / NIfTI job; returns what was written.

    ``max_voxels``: the largest input volume (default :data:`restorer.medical_checks.MAX_VOLUME_VOXELS`,
    0: no limit), checked from the headers before any voxel is read."""
    volume = read_job_volume(job, max_voxels)
    modality = medical.resolve_modality(task.name, volume, modality_override)
    for note in volume.notes:
        if on_message:
            on_message(note)
    notes_before = len(volume.notes)
    target = medical.output_target(volume, job.target_dir, suffix)
    bar = _slice_bar(volume.num_slices, progress, "slice")

    def restore(normalized: np.ndarray) -> np.ndarray:
        out = restorer.run_array(normalized)
        bar.update()
        return out

    try:
        values = medical.map_slices(volume, restore, modality, upscale=task.upscale)
    finally:
        bar.close()
    written = medical.write_volume(
        volume,
        values,
        target,
        note=f"{task.name} {restorer.entry.model}",
        alignment="origin",  # k-space zero-filling keeps the first pixel centre in place
        previews=previews,
        protect=protect,
    )
    for note in volume.notes[notes_before:]:  # e.g. values clipped to the stored range
        if on_message:
            on_message(note)
    return written


def restore_plain_image(
    restorer: Restorer,
    job: MedicalJob,
    task: MedicalTask,
    *,
    suffix: str = "out",
    ext: str = "auto",
    quality: int = 95,
    protect: Sequence[Path] = (),
) -> Path:
    """A PNG / TIFF / ... given to a medical task: gray, taken as normalised [0, 1], up-sampled in k-space
    for ``mri_sr_x*``, restored, written with its bit depth (alpha kept, bicubic when up-sampled)."""
    from restorer.training.degradations import kspace_zero_fill_upsample

    image = rio.read_image(job.source)
    pixels = rio.to_gray(image.pixels)
    if task.upscale > 1:
        pixels = np.clip(kspace_zero_fill_upsample(pixels, task.upscale), 0.0, 1.0)
    out = restorer.run_array(np.ascontiguousarray(pixels, dtype=np.float32))
    alpha = image.alpha
    if alpha is not None and task.upscale > 1:
        height, width = out.shape[:2]
        alpha = np.clip(cv2.resize(alpha, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)
    target = rio.output_path_for(job.source, job.target_dir, suffix, rio.resolve_output_ext(ext, image))
    return rio.write_image(target, out, alpha, bit_depth=image.bit_depth, quality=quality, protect=protect)


def process_medical_files(
    restorer: Restorer,
    plan: MedicalPlan,
    task: str,
    *,
    modality: str | None = None,
    suffix: str = "out",
    previews: str = "all",
    ext: str = "auto",
    quality: int = 95,
    progress: bool = True,
    on_message: Callable[[str], None] | None = None,
    max_voxels: int | None = None,
) -> Report:
    """Restore every job of ``plan``; a bad file or volume is recorded and the rest still written.

    ``report.written`` lists each result (a file, or a DICOM series folder); ``report.failed`` starts
    with the files the plan could not read. A volume above ``max_voxels`` (see :func:`restore_volume`)
    or with a damaged rescale is one such failure.
    """
    from tqdm import tqdm

    if previews not in PREVIEW_MODES:
        raise UsageError(f"--previews must be one of {', '.join(PREVIEW_MODES)}, not {previews!r}")
    spec = MEDICAL_TASKS[task]
    report = Report(skipped=list(plan.skipped), failed=list(plan.failed))
    protect: list[Path] = []
    for job in plan.jobs:
        protect += [job.source, *job.files]
    warned_plain = False
    bar = tqdm(plan.jobs, unit="vol", disable=not progress, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.source.name[-40:])
        try:
            if job.kind == "image":
                if not warned_plain and on_message:
                    on_message(
                        f"{job.source.name}: plain images are taken as already normalised to [0, 1] "
                        "(gray); the network was trained on the modality's full range"
                    )
                    warned_plain = True
                path = restore_plain_image(
                    restorer, job, spec, suffix=suffix, ext=ext, quality=quality, protect=protect
                )
                report.written.append(path)
            else:
                written = restore_volume(
                    restorer,
                    job,
                    spec,
                    modality_override=modality,
                    suffix=suffix,
                    previews=previews,
                    protect=protect,
                    progress=progress,
                    on_message=on_message,
                    max_voxels=max_voxels,
                )
                report.written.append(written.target)
        except RestorerError as exc:
            report.failed.append((job.source, str(exc)))
            bar.write(f"error: {exc}")
        except Exception as exc:  # keep going past one bad file; reported at the end
            message = f"{type(exc).__name__}: {exc}"
            report.failed.append((job.source, message))
            bar.write(f"error: {job.source}: {message}")
    bar.close()
    return report
