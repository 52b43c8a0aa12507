"""Shared fixtures: tiny HAT variants registered in the zoo for the duration of a test."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
import torch

from restorer import zoo

TINY_HAT = {
    "type": "HAT",
    "in_chans": 3,
    "img_size": 64,
    "window_size": 8,
    "compress_ratio": 3,
    "squeeze_factor": 6,
    "conv_scale": 0.01,
    "overlap_ratio": 0.5,
    "img_range": 1.0,
    "depths": [1],
    "embed_dim": 12,
    "num_heads": [2],
    "mlp_ratio": 2,
    "upsampler": "pixelshuffle",
    "resi_connection": "1conv",
}


TINY_S2LIC = {
    "N": 16,
    "M": 40,
    "num_slices": 5,
    "depths": [1, 2, 1, 1, 1],
    "num_heads": [2, 2, 2, 2, 2],
    "enh_channels": 8,
    "enh_growth": 4,
    "ep_hidden": [32, 24],
    "lrp_hidden": [24],
    "ctx_head_dim": 8,
}
"""A tiny S2LIC configuration (constructor keys, no ``type``) for the codec tests."""


def tiny_entry(scale: int, model: str = "tiny-hat") -> zoo.ZooEntry:
    base = zoo.get_entry("hat-s", scale)
    return dataclasses.replace(
        base,
        model=model,
        display_name=f"Tiny HAT ({model})",
        network_g=zoo._freeze({**TINY_HAT, "upscale": scale}),
        weight_file=f"{model}_x{scale}.pth",
        window_multiple=8,
    )


def _center_copy(conv: torch.nn.Conv2d, channels: int, repeat: int = 1, bias: float = 0.0) -> None:
    """Make ``conv`` copy its first ``channels`` inputs: output ``c * repeat + k`` = input ``c``."""
    with torch.no_grad():
        conv.weight.zero_()
        kh, kw = conv.weight.shape[-2:]
        for c in range(channels):
            for k in range(repeat):
                conv.weight[c * repeat + k, c, kh // 2, kw // 2] = 1.0
        conv.bias.zero_()
        conv.bias[: channels * repeat] = bias


def image_preserving_(net: torch.nn.Module, body_gain: float = 0.3) -> torch.nn.Module:
    """Turn a randomly initialised SR network into nearest-neighbour upscaling plus the body's
    random, context-dependent residual scaled by ``body_gain``.

    Works on the BasicSR layouts of our archs: first conv (``conv_first`` or
    ``overlap_embed.0.proj``), body output conv (``conv_after_body`` or the last layer of
    ``deep_feature_extraction``), and either ``conv_before_upsample`` + ``upsample`` + ``conv_last``
    or a one-step ``upsample`` (conv + pixel shuffle). A random network alone outputs a
    near-constant picture, which makes tests of alpha, tiling or colour meaningless; this keeps the
    picture while every attention layer still contributes.
    """
    c = 3
    first = net.conv_first if hasattr(net, "conv_first") else net.overlap_embed[0].proj
    body_out = net.conv_after_body if hasattr(net, "conv_after_body") else net.deep_feature_extraction[-1]
    two_stage = hasattr(net, "conv_before_upsample")
    offset = 1.0 if two_stage else 0.0  # +1 keeps features positive through LeakyReLU
    with torch.no_grad():
        first.weight.zero_()
        for ch in range(c):
            first.weight[ch, ch, first.weight.shape[-2] // 2, first.weight.shape[-1] // 2] = 1.0
        if first.bias is not None:
            first.bias.zero_()
            first.bias[:c] = offset
        body_out.weight.mul_(body_gain)
    stages = [m for m in net.upsample if isinstance(m, torch.nn.Conv2d)]
    shuffles = [m for m in net.upsample if isinstance(m, torch.nn.PixelShuffle)]
    if two_stage:
        _center_copy(net.conv_before_upsample[0], c)
        for conv, shuffle in zip(stages, shuffles):
            _center_copy(conv, c, repeat=shuffle.upscale_factor**2)
        _center_copy(net.conv_last, c, bias=-offset)
    else:
        _center_copy(stages[0], c, repeat=shuffles[0].upscale_factor ** 2)
    return net


def write_checkpoint(entry: zoo.ZooEntry, path: Path, seed: int = 0, key: str = "params_ema") -> Path:
    """An official-format checkpoint of an image-preserving random network (see above)."""
    from restorer.archs import build_network

    torch.manual_seed(seed)
    net = image_preserving_(build_network(entry.network_options()))
    torch.save({key: net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a test module (``pytestmark = pytest.mark.usefixtures(...)``): tiny tensors
    spend more time in OpenMP hand-offs than in arithmetic, and a busy 2-core machine makes that worse."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_zoo(monkeypatch, tmp_path):
    """Adds 'tiny-hat' at x2/x3/x4 for every sr_x* task, with weights in a temporary weights folder."""
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    extra = {}
    for scale in (2, 3, 4):
        entry = tiny_entry(scale)
        extra[entry.key] = entry
        write_checkpoint(entry, weights_dir / entry.weight_file, seed=scale)
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({**extra, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return weights_dir


@pytest.fixture
def rgb_image() -> np.ndarray:
    from skimage import data

    return data.astronaut()[100:148, 180:236]  # 48x56 uint8 RGB


# ---------------------------------------------------------------------------------------------------
# Restore-RWKV: tiny variants for the denoise and medical tasks, and synthetic DICOM / NIfTI inputs
# ---------------------------------------------------------------------------------------------------

TINY_RWKV = {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}


def tiny_rwkv_entry(task: str) -> zoo.ZooEntry:
    """A tiny Restore-RWKV for ``task`` (denoise: 3 channels, medical tasks: 1): ``tiny-rwkv-<task>``."""
    from restorer.medical_tasks import MEDICAL_TASKS

    base = zoo.get_entry("restore-rwkv" if task == "denoise" else "restore-rwkv-ct", 1)
    channels = 1 if task in MEDICAL_TASKS else 3
    model = f"tiny-rwkv-{task.replace('_', '-')}"
    network_g = {"type": "Restore_RWKV", "inp_channels": channels, "out_channels": channels, **TINY_RWKV}
    return dataclasses.replace(
        base,
        model=model,
        display_name=f"Tiny Restore-RWKV ({task})",
        network_g=zoo._freeze(network_g),
        weight_file=f"{model}.pth",
        in_channels=channels,
        out_channels=channels,
        tasks=(task,),
        sha256=None,
    )


@pytest.fixture
def tiny_rwkv_zoo(monkeypatch, tmp_path):
    """Adds ``tiny-rwkv-<task>`` for ``denoise`` and every medical task (random init: the global
    residual keeps the picture), with weights in a temporary weights folder. Returns that folder."""
    from restorer.archs import build_network
    from restorer.medical_tasks import MEDICAL_TASKS

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir(exist_ok=True)
    extra = {}
    for seed, task in enumerate(["denoise", *MEDICAL_TASKS]):
        entry = tiny_rwkv_entry(task)
        torch.manual_seed(seed)
        net = build_network(entry.network_options())
        torch.save({entry.param_key: net.state_dict()}, weights_dir / entry.weight_file)
        extra[entry.key] = entry
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({**extra, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return weights_dir


def dicom_dataset(sop_class: str, modality: str, raw: np.ndarray, bits_stored: int = 12, **attributes):
    """One monochrome DICOM image (pydicom ``Dataset`` with file meta, ready for ``save_as``): a phantom
    patient, axial orientation, 0.7 x 0.8 mm pixels, 2.5 mm slices, plus ``attributes``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    uid = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Test^Phantom", "0001"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.8]
    ds.SliceThickness = 2.5
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.set_pixel_data(raw, "MONOCHROME2", bits_stored, generate_instance_uid=False)
    return ds


@pytest.fixture
def make_dicom_series():
    """``make(folder, modality='CT', slices=3, rows=32, cols=40, seed=0) -> list of stored arrays``: a
    12-bit series (CT: intercept -1024, window 40/400) saved as ``slice{i}.dcm``, slices 5 mm apart."""
    from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

    def make(
        folder: Path, modality: str = "CT", slices: int = 3, rows: int = 32, cols: int = 40, seed: int = 0
    ):
        rng = np.random.default_rng(seed)
        folder.mkdir(parents=True, exist_ok=True)
        study, series, frame = generate_uid(), generate_uid(), generate_uid()
        raws = []
        for index in range(slices):
            raw = rng.integers(0, 4096, size=(rows, cols)).astype(np.uint16)
            extra = {"RescaleSlope": 1, "RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 400}
            ds = dicom_dataset(
                {"CT": CTImageStorage, "MR": MRImageStorage}[modality],
                modality,
                raw,
                12,
                StudyInstanceUID=study,
                SeriesInstanceUID=series,
                FrameOfReferenceUID=frame,
                SeriesNumber=2,
                InstanceNumber=index + 1,
                ImagePositionPatient=[-100.0, -120.0, 5.0 * index],
                **(extra if modality == "CT" else {}),
            )
            ds.save_as(folder / f"slice{index}.dcm", enforce_file_format=True)
            raws.append(raw)
        return raws

    return make


@pytest.fixture
def make_nifti():
    """``make(path, shape=(40, 32, 3), seed=0, high=4000.0) -> data``: a float32 NIfTI-1 volume with a
    2 x 1.5 x 3 mm affine (``.nii`` or ``.nii.gz`` by the name), values in [0, ``high``)."""
    import nibabel as nib

    def make(path: Path, shape=(40, 32, 3), seed: int = 0, high: float = 4000.0) -> np.ndarray:
        data = (np.random.default_rng(seed).random(shape) * high).astype(np.float32)
        affine = np.diag([2.0, 1.5, 3.0, 1.0])
        affine[:3, 3] = [-40.0, -24.0, 10.0]
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), str(path))
        return data

    return make


# ---------------------------------------------------------------------------------------------------
# RRFormer: a tiny variant for the reflection_removal task (random VGG19: no download needed)
# ---------------------------------------------------------------------------------------------------

TINY_RRFORMER = {
    "n_feats": 16,
    "embed_dim": 24,
    "img_size": 64,
    "depths": [1],
    "num_heads": [2],
    "window_size": 8,
    "hypercolumn_layers": ["relu1_1", "relu2_1"],
    "pyramid_scales": [4, 8],
    "vgg_weights": "random",
}


@pytest.fixture
def tiny_rrformer_zoo(monkeypatch, tmp_path):
    """Adds ``tiny-rrformer`` (reflection_removal) with random weights in a temporary weights folder."""
    from restorer.archs import build_network

    base = zoo.get_entry("rrformer", 1)
    entry = dataclasses.replace(
        base,
        model="tiny-rrformer",
        display_name="Tiny RRFormer",
        network_g=zoo._freeze({**dict(base.network_options()), **TINY_RRFORMER}),
        weight_file="tiny-rrformer.pth",
        cpu_tile=64,
        tile_overlap=16,
        sha256=None,
    )
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir(exist_ok=True)
    torch.manual_seed(0)
    net = build_network(entry.network_options())
    torch.save({entry.param_key: net.state_dict()}, weights_dir / entry.weight_file)
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({entry.key: entry, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return entry


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail instead of hanging for good when something opens a FIFO (SIGALRM interrupts the open)."""

    def hung(*_):
        raise TimeoutError(f"still running after {seconds} s: a FIFO was opened?")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
