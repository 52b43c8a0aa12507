"""The medical tasks and their modalities' value ranges (facts: Restore-RWKV ``data/common.py``).

Kept apart from :mod:`restorer.medical` (DICOM / NIfTI I/O) so that the task router can list the
tasks without importing pydicom, nibabel or torch.
"""

from __future__ import annotations

from dataclasses import dataclass

MODALITY_RANGES: dict[str, tuple[float, float]] = {
    "CT": (-1024.0, 3072.0),  # Hounsfield units
    "PET": (0.0, 20.0),  # SUV (body weight)
    "MRI": (0.0, 4095.0),  # arbitrary units of 12-bit magnitude images (IXI)
}
"""Physical range of each modality, clipped and mapped linearly to the network's [0, 1]."""


@dataclass(frozen=True)
class MedicalTask:
    """A medical restoration task as the router sees it.

    ``modality`` is ``None`` when the file says it (``all_in_one``). The network always runs at scale
    1 on a single channel; ``upscale`` > 1 means the input is first up-sampled to the finer grid by
    k-space zero-filling (:func:`restorer.training.degradations.kspace_zero_fill_upsample`), the
    inverse of the k-space truncation the training pairs are made with.
    """

    name: str
    modality: str | None
    channels: int
    upscale: int
    description: str

    @property
    def value_range(self) -> tuple[float, float] | None:
        return MODALITY_RANGES.get(self.modality) if self.modality else None


MEDICAL_TASKS: dict[str, MedicalTask] = {
    task.name: task
    for task in (
        MedicalTask("ct_denoise", "CT", 1, 1, "Low-dose CT -> normal-dose CT (AAPM Mayo)"),
        MedicalTask("mri_sr_x2", "MRI", 1, 2, "MRI super-resolution x2 (IXI; k-space zero-filled input)"),
        MedicalTask("mri_sr_x4", "MRI", 1, 4, "MRI super-resolution x4 (IXI; k-space zero-filled input)"),
        MedicalTask("pet_synthesis", "PET", 1, 1, "Low-dose PET -> full-dose PET"),
        MedicalTask("all_in_one", None, 1, 1, "One network for PET synthesis, CT denoising and MRI SR"),
    )
}
