"""The Gradio web demo: upload an image, pick a task and a model, compare before and after, download.

A thin shell over restorer's public calls. Every task in the dropdown comes from the task router
(:data:`restorer.tasks.TASKS`) and every model from the zoo through :meth:`TaskSpec.models`; the
model list shows only the variants whose weights are on disk, the one :func:`restorer.tasks.resolve`
would pick first. Reading, running and writing are :func:`restorer.io.read_image`,
:meth:`Restorer.run_image` and :func:`restorer.io.write_image`, so the download keeps 16-bit depth
and alpha exactly like ``restorer infer``.

What a task does depends on its kind (:attr:`TaskSpec.kind`). Each kind has a runner in
:data:`RUNNERS` that turns a :class:`Job` into an :class:`Outcome` (a before/after pair for the
slider, one file to download, and labelled facts); the layout is the same for every kind. ``image``
tasks show the bicubic-upscaled input against the result; ``codec`` tasks the original against the
image decoded from the ``.s2l`` file, with bits per pixel, file size, PSNR and MS-SSIM. Medical tasks
(DICOM / NIfTI) are listed but run from the command line.

``python app.py`` builds the app with :func:`build_app` and launches it with :func:`launch_options`.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from restorer import io as rio
from restorer import tasks
from restorer import weights as rw
from restorer.codec.api import (
    Codec,
    compress_image,
    decompress_bytes,
    load_codec,
    measure_rd,
    resolve_codec_entry,
)
from restorer.engine.budget import check_codec_job, check_image_job
from restorer.engine.runner import (
    PRECISIONS,
    Restorer,
    auto_tile,
    build_restorer,
    resolve_device,
    resolve_precision,
)
from restorer.engine.tiling import TileSettings, is_out_of_memory
from restorer.errors import RestorerError, UsageError
from restorer.zoo import ZooEntry

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 2**21
"""Largest input (width x height) the demo accepts by default: about 2.1 megapixels, so Full HD
(1920 x 1080) fits. ``python app.py --max-pixels N`` changes it; ``restorer infer`` has no such limit."""

MAX_FILE_SIZE = "100mb"
"""Upload size cap enforced by Gradio before a file reaches us (a 2 MP 16-bit RGBA TIFF is ~17 MB)."""

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

TILE_CHOICES: list[tuple[str, str]] = [
    ("auto (by free GPU memory; 256 on CPU)", "auto"),
    ("whole image (no tiling)", "0"),
    *((f"{size} px", str(size)) for size in (128, 192, 256, 384, 512, 768, 1024)),
]

KEEP_RUNS = 16
"""Result folders kept on disk; Gradio copies each result into its own cache before it is served,
so older folders can go."""

# All restoration events share one queue slot: one image on the device at a time, whatever the
# endpoint (UI button or API), so a model and its activations never compete for memory.
WORK_QUEUE = "restorer-work"


def uploaded_file(payload: Any) -> tuple[Path, str] | None:
    """(path on the server, the user's file name) of an uploaded image, from Gradio's raw file data.

    The restore events run with ``preprocess=False``: ``gr.Image`` would otherwise open every upload
    with Pillow before the handler runs, so a file Pillow cannot decode would fail inside Gradio with
    a bare "Error", and files in another mode would be re-encoded. Taking the file as it is lets
    :func:`restorer.io.read_image` keep 16-bit samples, alpha and EXIF orientation, and explain a bad
    file in its own words. Gradio has already moved the upload into its cache and checked where it
    came from before the handler sees it. Plain paths (direct calls) are accepted too.
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, (str, os.PathLike)):
        return Path(payload), Path(payload).name
    path = payload.get("path")
    if not path:
        raise UsageError("The image arrived without a file; send it as a file (gradio_client.handle_file).")
    return Path(path), payload.get("orig_name") or Path(path).name


# ----------------------------------------------------------------------------------------------------
# Choices shown in the UI, all derived from the router, the zoo and the machine
# ----------------------------------------------------------------------------------------------------


def task_choices() -> list[tuple[str, str]]:
    """(label, task name) for every task the router knows, in router order."""
    choices = []
    for spec in tasks.TASKS.values():
        note = "" if spec.kind in RUNNERS else " (command line only)"
        choices.append((f"{spec.name}: {spec.description}{note}", spec.name))
    return choices


def available_models(task: str) -> list[ZooEntry]:
    """The task's models whose weights are present, the router's default first, then its order."""
    spec = tasks.get_task(task)
    present = [spec.entry(m) for m in spec.models() if rw.is_available(spec.entry(m))]
    if not present:
        return []
    if spec.kind == "codec":  # the codec CLI's default: the best rate point present
        default = resolve_codec_entry(weights_available=rw.is_available)
    else:
        default = tasks.resolve(task, weights_available=rw.is_available)
    return [default] + [e for e in present if e.key != default.key]


def model_choices(task: str) -> list[tuple[str, str]]:
    """(label, model name) for :func:`available_models`; the first is marked as the default."""
    models = available_models(task)
    return [
        (f"{e.display_name} ({e.model}){', default' if i == 0 else ''}", e.model)
        for i, e in enumerate(models)
    ]


def default_task() -> str:
    """The first task (router order) with a runner and a model whose weights are present."""
    runnable = [name for name, spec in tasks.TASKS.items() if spec.kind in RUNNERS]
    for name in runnable:
        if available_models(name):
            return name
    return (runnable or list(tasks.TASKS))[0]


def device_choices() -> list[str]:
    """``auto``, ``cpu`` and every accelerator this machine has (names resolve_device accepts)."""
    choices = ["auto", "cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        choices.append("mps")
    return choices


def task_note(task: str) -> str:
    """Markdown under the model list: what the task does, and what is missing to run it."""
    spec = tasks.get_task(task)
    size = f"{spec.scale}x the input's width and height" if spec.scale != 1 else "the input's size"
    output = {"image": "an image", "codec": "an .s2l file and the image decoded from it"}.get(
        spec.kind, spec.kind
    )
    lines = [f"Output: {output} at {size}."]
    if spec.kind not in RUNNERS:
        lines.append(not_in_demo_message(spec))
    elif not available_models(task):
        lines.append(rw.missing_weights_message(tasks.resolve(task)))
    if spec.kind == "codec":
        lines.append("Tile size and precision do not apply: the codec codes the whole image in float32.")
    return "\n\n".join(lines)


def not_in_demo_message(spec: tasks.TaskSpec) -> str:
    """Why a task has no runner here, and how to run it instead."""
    if spec.kind == "medical":
        return (
            f"{spec.name} works on DICOM and NIfTI volumes, which this demo does not take; run it with "
            f"`restorer infer --task {spec.name} SCAN_FOLDER_OR_FILE` (see `restorer infer --help`)."
        )
    return (
        f"The web demo cannot run '{spec.kind}' tasks such as {spec.name}; "
        "use the command line (`restorer --help`)."
    )


def _check_text_argument(name: str, value: Any, optional: bool) -> None:
    """API callers can send anything: a request's text field that is not text is a one-line error."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise UsageError(
            f"{name} must be text (e.g. a task name from `restorer models`), not {type(value).__name__}"
        )


def parse_tile(value: str | int | None) -> int | None:
    """``auto`` (or empty) -> None; otherwise a tile size >= 0 in input pixels (0 = whole image)."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return None
    try:
        tile = int(str(value).strip().split()[0])
    except ValueError:
        raise UsageError(
            f"Tile size must be 'auto', 0 (whole image) or a size in pixels, not {value!r}."
        ) from None
    if tile < 0:
        raise UsageError(f"Tile size must be 0 (whole image) or a positive size, not {tile}.")
    return tile


# ----------------------------------------------------------------------------------------------------
# Model cache
# ----------------------------------------------------------------------------------------------------


class ModelCache:
    """Loaded models kept warm, one per (model, scale, device, precision, weight file).

    Restoration models (:meth:`get`) and codecs (:meth:`get_codec`) share the cache. The least recently
    used one is dropped beyond ``capacity`` so a long-running demo that visits many models does not
    hold them all in GPU memory at once.
    """

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = max(1, capacity)
        self._models: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def _get_or_build(self, key: tuple, build: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = build()
            self._models[key] = model
            while len(self._models) > self.capacity:
                _, dropped = self._models.popitem(last=False)
                if dropped.device.type == "cuda":
                    del dropped
                    torch.cuda.empty_cache()
            return model

    def get(self, entry: ZooEntry, device: str = "auto", precision: str = "auto") -> Restorer:
        """The loaded model for ``entry`` on ``device`` at ``precision``, building it on first use.

        Raises the runner's errors: missing weights (with the message restorer.weights gives),
        a checkpoint that does not fit, an unknown device or precision.
        """
        path = rw.require_weights(entry)
        torch_device = resolve_device(device)
        dtype = resolve_precision(precision, torch_device, entry)
        # The weight file's identity is part of the key so a replaced file is loaded afresh.
        key = (entry.model, entry.scale, str(torch_device), str(dtype), str(path), path.stat().st_mtime_ns)
        return self._get_or_build(key, lambda: build_restorer(entry, path, str(torch_device), precision))

    def get_codec(self, entry: ZooEntry, device: str = "auto") -> Codec:
        """The loaded codec for ``entry`` on ``device`` (always float32: the entropy model's tables
        must be reproduced exactly at decode time)."""
        path = rw.require_weights(entry)
        torch_device = resolve_device(device)
        key = ("codec", entry.model, str(torch_device), str(path), path.stat().st_mtime_ns)
        return self._get_or_build(key, lambda: load_codec(entry.model, device=torch_device))


# ----------------------------------------------------------------------------------------------------
# Jobs, outcomes and the runner of each task kind
# ----------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One request, already checked: the image is read and within the pixel limit."""

    spec: tasks.TaskSpec
    image: rio.LoadedImage
    name: str  # stem of the uploaded file, used in output names
    model: str | None  # None: the router's default for the task
    tile: int | None  # None: auto
    device: str
    precision: str
    out_dir: Path
    models: ModelCache


@dataclass
class Outcome:
    """What one run shows: a before/after pair of equal size, a file to download, and facts."""

    before: Path  # left side of the slider
    after: Path  # right side of the slider
    download: Path  # the full-precision result (an image, or the compressed file)
    download_label: str
    facts: list[tuple[str, str]]
    result_image: Path | None = None  # what the ``restore`` API returns; None: ``download``
    slider_label: str = "Before (bicubic) | after"


def describe_image(width: int, height: int, bit_depth: int, gray: bool, alpha: bool) -> str:
    colour = "gray" if gray else "RGB"
    return f"{width} x {height} px, {bit_depth}-bit {colour}{' + alpha' if alpha else ''}"


def resize_bicubic(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxWxC (or HxW) float in [0, 1] -> the same at ``width`` x ``height``, clipped, channels kept."""
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    out = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_CUBIC)
    if pixels.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return np.clip(out, 0.0, 1.0)


class _TileBar:
    """Feeds the runner's ``on_tile(done, total)`` into a tqdm bar that Gradio's progress tracks.

    The runner restarts its count for each pass (the alpha plane, each channel of a one-channel
    model, a retry with smaller tiles after running out of memory); a count that goes down starts a
    new pass, so the bar keeps moving forward. ``passes`` is the expected number, for the total.
    """

    def __init__(self, tiles_per_pass: int, passes: int, desc: str) -> None:
        self.total = max(1, tiles_per_pass * passes)
        self.bar = tqdm(total=self.total, desc=desc, unit="tile", leave=False)
        self.finished_passes = 0
        self.last = 0

    def __call__(self, done: int, total: int) -> None:
        if done < self.last:
            self.finished_passes += self.last
        self.last = done
        position = min(self.finished_passes + done, self.total)
        if position > self.bar.n:
            self.bar.update(position - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def run_image_job(job: Job, progress: gr.Progress | None = None) -> Outcome:
    """``image`` tasks: restore with the task's model, show bicubic-upscaled input vs output."""
    entry = tasks.resolve(job.spec.name, job.model or None, weights_available=rw.is_available)
    # The pixel limit alone does not bound the memory (raised with --max-pixels, at x4): refused with
    # a message before a model is loaded or run, rather than a MemoryError half-way through.
    check_image_job(Path(job.name), job.image.height, job.image.width, entry.scale)
    if progress is not None:
        progress(0, desc=f"Loading {entry.display_name} x{entry.scale}")
    restorer = job.models.get(entry, job.device, job.precision)
    restorer.tile = TileSettings(job.tile if job.tile is not None else auto_tile(restorer.device))
    restorer.on_message = gr.Warning  # e.g. "out of memory: retrying with 128 px tiles" as a toast
    image = job.image
    color_passes = image.pixels.shape[2] if entry.in_channels == 1 and not image.is_gray else 1
    passes = color_passes + (1 if image.has_alpha else 0)
    tiles = restorer.tile_count(image.height, image.width)
    bar = _TileBar(tiles, passes, desc=f"{entry.display_name} x{entry.scale}")
    started = time.perf_counter()
    try:
        pixels, alpha = restorer.run_image(image, on_tile=bar)
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    out_h, out_w = pixels.shape[:2]

    stem = f"{job.name}_{job.spec.name}_{entry.model}"
    full = rio.write_image(
        job.out_dir / f"{stem}.png", pixels, alpha, bit_depth=image.bit_depth, icc_profile=image.icc_profile
    )
    # The slider gets 8-bit PNG previews (browsers show them everywhere); the download is ``full``.
    after = full
    if image.bit_depth != 8:
        after = rio.write_image(job.out_dir / f"{stem}_preview.png", pixels, alpha, bit_depth=8)
    before_pixels = resize_bicubic(image.pixels, out_w, out_h)
    before_alpha = None if image.alpha is None else resize_bicubic(image.alpha, out_w, out_h)
    before = rio.write_image(
        job.out_dir / f"{job.name}_bicubic.png", before_pixels, before_alpha, bit_depth=8
    )

    used_tile, _ = restorer.tile.resolved(entry.window_multiple)
    tiling = "whole image" if used_tile == 0 else f"{used_tile} px tiles, {tiles} per pass"
    precision = str(restorer.dtype).removeprefix("torch.")
    facts = [
        ("Input", describe_image(image.width, image.height, image.bit_depth, image.is_gray, image.has_alpha)),
        ("Output", describe_image(out_w, out_h, image.bit_depth, image.is_gray, alpha is not None)),
        ("Model", f"{entry.display_name} x{entry.scale} (`{entry.model}`)"),
        ("Device", f"{restorer.device} ({precision}), {tiling}"),
        ("Time", f"{seconds:.2f} s"),
    ]
    return Outcome(before, after, full, f"Download {full.name} ({min(image.bit_depth, 16)}-bit PNG)", facts)


def _file_size(num_bytes: int) -> str:
    return f"{num_bytes} bytes" if num_bytes < 10_000 else f"{num_bytes / 1024:.1f} KiB"


def run_codec_job(job: Job, progress: gr.Progress | None = None) -> Outcome:
    """``codec`` tasks: code the image to an ``.s2l`` file, decode that file, show original vs decoded.

    The decoded side comes from the file's bytes (not the encoder's reconstruction), so what the slider
    shows is what a recipient of the download gets. Rate and quality are measured as ``restorer
    benchmark --task compress`` does (:func:`restorer.codec.api.measure_rd`).
    """
    entry = resolve_codec_entry(job.model or None, weights_available=rw.is_available)
    if progress is not None:
        progress(0, desc=f"Loading {entry.display_name}")
    codec = job.models.get_codec(entry, job.device)
    image = job.image
    # coding and decoding need the same peak; refused before either runs (see run_image_job)
    check_codec_job(Path(job.name), image.height, image.width, int(getattr(codec.model, "N", 192)))
    if progress is not None:
        progress(0.2, desc="Encoding")
    started = time.perf_counter()
    data = compress_image(codec, image.pixels)
    encode_seconds = time.perf_counter() - started
    if progress is not None:
        progress(0.6, desc="Decoding the file")
    started = time.perf_counter()
    decoded = decompress_bytes(codec, data)
    decode_seconds = time.perf_counter() - started
    point = measure_rd(image.pixels, data, decoded)

    stem = f"{job.name}_{entry.model}"
    coded = rio.write_atomically(job.out_dir / f"{stem}.s2l", data)
    after = rio.write_image(job.out_dir / f"{stem}_decoded.png", decoded, None, bit_depth=8)
    before = rio.write_image(job.out_dir / f"{job.name}_original.png", image.pixels, None, bit_depth=8)

    raw_bytes = image.width * image.height * (1 if image.is_gray else 3)  # 8-bit samples, no alpha
    ms_ssim = "n/a (a side is 160 px or less)" if point.ms_ssim is None else f"{point.ms_ssim:.4f}"
    facts = [
        ("Input", describe_image(image.width, image.height, image.bit_depth, image.is_gray, image.has_alpha)),
        ("Model", f"{entry.display_name} (`{entry.model}`)"),
        ("Bits per pixel", f"{point.bpp:.3f}"),
        (
            "File size",
            f"{_file_size(point.num_bytes)} ({raw_bytes / point.num_bytes:.1f}:1 against raw 8-bit)",
        ),
        ("PSNR", f"{point.psnr:.2f} dB (RGB, 8-bit)"),
        ("MS-SSIM", ms_ssim),
        ("Device", f"{codec.device} (float32)"),
        ("Time", f"{encode_seconds:.2f} s to encode, {decode_seconds:.2f} s to decode"),
    ]
    if image.bit_depth != 8:
        facts.append(("Note", f"the {image.bit_depth}-bit input is coded and measured at 8 bits"))
    if image.has_alpha:
        facts.append(("Note", "alpha is not coded; the decoded image has none"))
    label = f"Download {coded.name} ({_file_size(point.num_bytes)})"
    return Outcome(
        before,
        after,
        coded,
        label,
        facts,
        result_image=after,
        slider_label="Original | decoded from the file",
    )


KindRunner = Callable[[Job, "gr.Progress | None"], Outcome]

# One runner per task kind. Medical tasks (DICOM / NIfTI volumes in and out) have none: they run with
# ``restorer infer``, and the task list says so.
RUNNERS: dict[str, KindRunner] = {"image": run_image_job, "codec": run_codec_job}


def format_facts(facts: list[tuple[str, str]]) -> str:
    return "  \n".join(f"**{label}:** {value}" for label, value in facts)


# ----------------------------------------------------------------------------------------------------
# The app's state and event handlers
# ----------------------------------------------------------------------------------------------------


def _user_error(message: str) -> gr.Error:
    """A message shown in the UI (and returned to API clients) without a server traceback."""
    return gr.Error(message, print_exception=False)


class WebDemo:
    """Everything behind the UI: the pixel limit, the model cache and a folder for results."""

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS, cache_capacity: int = 4) -> None:
        if max_pixels <= 0:
            raise UsageError(f"--max-pixels must be positive, got {max_pixels}.")
        self.max_pixels = max_pixels
        self.models = ModelCache(cache_capacity)
        self.work_dir = Path(tempfile.mkdtemp(prefix="restorer-webapp-"))
        self._finalizer = weakref.finalize(self, shutil.rmtree, self.work_dir, True)
        self._runs = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Remove the result folder (also done automatically at exit)."""
        self._finalizer()

    # -- checks -------------------------------------------------------------------------------------

    def read_upload(self, upload: Any) -> tuple[rio.LoadedImage, str]:
        """Read an upload (Gradio file data or a path): (image, the user's file name), or raise a
        gr.Error that says what is wrong with it."""
        found = uploaded_file(upload)
        if found is None:
            raise _user_error("No image: upload one (drag and drop, paste, or pick an example) first.")
        path, name = found
        size = _header_size(path)
        if size == "bomb":
            raise _user_error(
                f"{name} declares more than {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels, far beyond "
                f"this demo's limit of {self.max_pixels} pixels; it may be a decompression bomb."
            )
        if size is not None:
            self._check_pixels(name, *size)
        try:
            image = rio.read_image(path)
        except RestorerError as exc:
            # The server-side temporary path means nothing to the user; their file name does.
            raise _user_error(str(exc).replace(str(path), name)) from None
        self._check_pixels(name, image.width, image.height)
        return image, name

    def _check_pixels(self, name: str, width: int, height: int) -> None:
        if width * height > self.max_pixels:
            raise _user_error(
                f"{name} is {width} x {height} = {width * height / 1e6:.2f} megapixels; this demo accepts "
                f"at most {self.max_pixels / 1e6:.2f} megapixels ({self.max_pixels} pixels, set with "
                "`python app.py --max-pixels N`). Crop or downscale it, or use `restorer infer`, "
                "which has no limit."
            )

    # -- running ------------------------------------------------------------------------------------

    def _next_out_dir(self) -> Path:
        with self._lock:
            self._runs += 1
            run = self._runs
        out_dir = self.work_dir / f"run-{run:06d}"
        out_dir.mkdir(parents=True)
        stale = self.work_dir / f"run-{run - KEEP_RUNS:06d}"
        shutil.rmtree(stale, ignore_errors=True)
        return out_dir

    def run(
        self,
        upload: Any,
        task: str,
        model: str | None = None,
        tile: str | int | None = "auto",
        device: str = "auto",
        precision: str = "auto",
        progress: gr.Progress | None = None,
    ) -> Outcome:
        """Check the request, dispatch it to its kind's runner, and turn user errors into gr.Error.

        ``upload`` is Gradio's file data of the uploaded image, or a path.
        """
        try:
            for name, value, optional in (
                ("task", task, False),
                ("model", model, True),
                ("device", device, False),
                ("precision", precision, False),
            ):
                _check_text_argument(name, value, optional)
            if tile is not None and not isinstance(tile, (str, int)) or isinstance(tile, bool):
                raise UsageError(f"tile must be 'auto' or a whole number, not {type(tile).__name__}")
            spec = tasks.get_task(task or "")
            runner = RUNNERS.get(spec.kind)
            if runner is None:
                raise UsageError(not_in_demo_message(spec))
            image, name = self.read_upload(upload)
            job = Job(
                spec=spec,
                image=image,
                name=Path(name).stem[:64] or "image",
                model=model or None,
                tile=parse_tile(tile),
                device=device or "auto",
                precision=precision or "auto",
                out_dir=self._next_out_dir(),
                models=self.models,
            )
            return runner(job, progress)
        except gr.Error:
            raise
        except RestorerError as exc:
            raise _user_error(str(exc)) from None
        except Exception as exc:  # show something useful rather than Gradio's bare "Error"
            if is_out_of_memory(exc):
                raise _user_error(
                    "The device ran out of memory even with smaller tiles. Pick a smaller tile size "
                    "under Advanced, a smaller model, or the CPU."
                ) from None
            log.exception("restoration failed")
            raise gr.Error(f"Restoration failed: {type(exc).__name__}: {exc}") from exc

    # -- event handlers -----------------------------------------------------------------------------

    def restore_ui(
        self,
        upload: Any,
        task: str,
        model: str | None,
        tile: str,
        device: str,
        precision: str,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (Gradio's convention)
    ) -> tuple[gr.ImageSlider, gr.DownloadButton, str]:
        outcome = self.run(upload, task, model, tile, device, precision, progress)
        slider = gr.ImageSlider(value=(str(outcome.before), str(outcome.after)), label=outcome.slider_label)
        download = gr.DownloadButton(label=outcome.download_label, value=str(outcome.download), visible=True)
        return slider, download, format_facts(outcome.facts)

    def restore_api(
        self,
        image: Any,
        task: str,
        model: str | None,
        progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008
    ) -> str:
        """``restore`` endpoint: (image file, task, model or empty for the default) -> result image
        (for ``compress``: the image decoded from the coded file)."""
        outcome = self.run(image, task, model, progress=progress)
        return str(outcome.result_image or outcome.download)

    def on_task_change(self, task: str) -> tuple[gr.Dropdown, str]:
        choices = model_choices(task)
        value = choices[0][1] if choices else None
        info = "only models whose weights are present" if choices else "no weights present for this task"
        return gr.Dropdown(choices=choices, value=value, info=info), task_note(task)


def _header_size(path: Path) -> tuple[int, int] | str | None:
    """(width, height) from the file header without decoding pixels; ``"bomb"`` above the size Pillow
    refuses outright; None when the header cannot tell (read_image then explains what is wrong).

    Checked before decoding so an oversize upload is refused without allocating it. ``probe_size``
    reads a WebP's size from its RIFF chunks: Pillow's own WebP open already allocates the canvas.
    """
    size = rio.probe_size(path)
    if size is None:
        return None
    height, width = size
    if Image.MAX_IMAGE_PIXELS and width * height > 2 * Image.MAX_IMAGE_PIXELS:  # Pillow's bomb error
        return "bomb"
    return width, height


# ----------------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------------


def sample_images() -> list[Path]:
    """The example images offered under the upload box (the package's samples/)."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLES_DIR.iterdir() if rio.is_image_file(p))


def build_app(max_pixels: int = DEFAULT_MAX_PIXELS, demo: WebDemo | None = None) -> gr.Blocks:
    """The Gradio app, with its queue set up (one job at a time on the device).

    ``demo`` supplies the state (tests pass their own to inspect the model cache).
    """
    demo = demo or WebDemo(max_pixels)
    first_task = default_task()
    first_models = model_choices(first_task)
    with gr.Blocks(title="restorer", analytics_enabled=False, delete_cache=(3600, 7200)) as app:
        gr.Markdown(
            "# restorer\nImage restoration and super-resolution. Upload an image (drag and drop, paste "
            "or pick an example), choose a task and a model, and compare before and after with the "
            "slider. The download is the full-precision PNG (16-bit and alpha kept), or for compression "
            "the .s2l file, which `restorer decompress` reads."
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image_in = gr.Image(
                    label="Input image",
                    type="filepath",
                    image_mode=None,
                    format="png",
                    sources=["upload", "clipboard"],
                    elem_id="input-image",
                    height=360,
                )
                task_in = gr.Dropdown(
                    task_choices(), value=first_task, label="Task", elem_id="task", interactive=True
                )
                model_in = gr.Dropdown(
                    first_models,
                    value=first_models[0][1] if first_models else None,
                    label="Model",
                    info="only models whose weights are present",
                    elem_id="model",
                    interactive=True,
                )
                note = gr.Markdown(task_note(first_task), elem_id="task-note")
                with gr.Accordion("Advanced", open=False):
                    tile_in = gr.Dropdown(
                        TILE_CHOICES,
                        value="auto",
                        label="Tile size (input pixels)",
                        info="smaller tiles use less memory; tiles overlap and are blended without seams",
                        allow_custom_value=True,
                        elem_id="tile",
                    )
                    device_in = gr.Dropdown(device_choices(), value="auto", label="Device", elem_id="device")
                    precision_in = gr.Dropdown(
                        list(PRECISIONS),
                        value="auto",
                        label="Precision",
                        info="auto: fp32 on CPU; bf16, or fp16 where the model is safe in it, on a GPU",
                        elem_id="precision",
                    )
                run_button = gr.Button("Restore", variant="primary", elem_id="run-button")
                samples = sample_images()
                if samples:
                    gr.Examples(
                        [[str(p)] for p in samples],
                        inputs=[image_in],
                        label="Examples (restorer/samples)",
                        elem_id="examples",
                    )
            with gr.Column(scale=1):
                slider = gr.ImageSlider(
                    label="Before (bicubic) | after",
                    type="filepath",
                    format="png",
                    image_mode=None,
                    interactive=False,
                    buttons=["fullscreen"],  # no download of the 8-bit preview: see the button below
                    elem_id="result-slider",
                )
                download = gr.DownloadButton("Download", visible=False, elem_id="download")
                facts = gr.Markdown(elem_id="result-info")

        task_in.change(demo.on_task_change, task_in, [model_in, note], api_visibility="private")
        # Weights may have been added since start-up: list what is present when a page opens.
        app.load(demo.on_task_change, task_in, [model_in, note], api_visibility="private")
        run_button.click(
            demo.restore_ui,
            [image_in, task_in, model_in, tile_in, device_in, precision_in],
            [slider, download, facts],
            api_visibility="private",
            concurrency_id=WORK_QUEUE,
            preprocess=False,  # the upload reaches read_upload untouched: see uploaded_file()
        )

        # API-only endpoint (no trigger in the page): restore(image, task, model) -> image file.
        api_image = gr.Image(label="image", type="filepath", image_mode=None, format="png", visible=False)
        api_task = gr.Textbox(label="task", visible=False)
        api_model = gr.Textbox(value="", label="model (empty: the task's default)", visible=False)
        api_result = gr.Image(label="result", type="filepath", format="png", image_mode=None, visible=False)
        gr.on(
            triggers=[],
            fn=demo.restore_api,
            inputs=[api_image, api_task, api_model],
            outputs=[api_result],
            api_name="restore",
            api_description="Restore one image with a task and model; returns the full-precision PNG.",
            concurrency_id=WORK_QUEUE,
            preprocess=False,
        )
    app.queue(default_concurrency_limit=1)
    app.restorer_demo = demo  # the state behind this app, for tests and embedding
    return app


def launch_options() -> dict[str, Any]:
    """Keyword arguments for ``Blocks.launch`` that belong to the app rather than to the caller."""
    return {"max_file_size": MAX_FILE_SIZE}
