"""The output plan (issue 21): no two inputs share an output, existing outputs and inputs are never
replaced, earlier outputs in -o are not read back, and bad -s / --suffix values are refused early."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import test_codec

from restorer import io as rio
from restorer.cli import main
from restorer.engine.output_plan import gather, plan_outputs
from restorer.errors import OutputExistsError

from conftest import deadline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (16, 24)) -> Path:
    """A small random RGB image in the format of ``path``'s suffix (any case)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    ok, data = cv2.imencode(f".{path.suffix.lstrip('.').lower()}", pixels)
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return path


def _plan(inputs, out_dir, **options):
    candidates, skipped = gather([str(p) for p in inputs], out_dir, recursive=options.pop("recursive", False))
    return plan_outputs(candidates, out_dir, **options), skipped


def _names(plan) -> dict[str, str]:
    return {item.source.name if item.source.parent.name == "in" else str(item.source): item.name
            for item in plan.outputs}  # fmt: skip


def _infer(*argv: str) -> int:
    return main(["infer", "--task", "sr_x2", "-m", "tiny-hat", "-q", *argv])


def _code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse
        return exc.code


# ---------------------------------------------------------------------------------------------------
# The plan itself (no model)
# ---------------------------------------------------------------------------------------------------


def test_inputs_sharing_an_output_name_get_distinct_names(tmp_path):
    src = tmp_path / "in"
    for name in ("x.png", "x.PNG", "y.jpg", "y.jpeg", "w.png", "w.webp", "w_png.jpg", "solo.png"):
        _image(src / name)
    d1, d2 = _image(tmp_path / "d1" / "z.png"), _image(tmp_path / "d2" / "z.png")
    plan, _ = _plan([src, d1, d2], tmp_path / "out", suffix="out")
    names = _names(plan)
    assert names["solo.png"] == "solo_out"
    assert names["y.jpg"] == "y_jpg_out" and names["y.jpeg"] == "y_jpeg_out"
    # x.png / x.PNG differ only in case (one file on macOS and Windows): a counter, in input order
    assert sorted([names["x.png"], names["x.PNG"]]) == ["x_1_out", "x_2_out"]
    # w_png.jpg keeps its own name; w.png's extension-tagged name would be the same, so it moves on
    assert names["w_png.jpg"] == "w_png_out"
    assert names["w.png"] == "w_png_2_out" and names["w.webp"] == "w_webp_out"
    assert names[str(d1)] == "z_1_out" and names[str(d2)] == "z_2_out"
    keys = {(str(item.target_dir), item.name.casefold()) for item in plan.outputs}
    assert len(keys) == len(plan.outputs) == 10
    assert len(plan.collisions) == 4 and all(item.renamed for group in plan.collisions for item in group)
    assert any("would get the same output name" in line for line in plan.notes())


def test_recursive_inputs_keep_their_folders_and_need_no_renaming(tmp_path):
    src = tmp_path / "in"
    _image(src / "a" / "z.png")
    _image(src / "b" / "z.png")
    plan, _ = _plan([src], tmp_path / "out", suffix="out", recursive=True)
    assert [item.target("png") for item in plan.outputs] == [
        tmp_path / "out" / "a" / "z_out.png",
        tmp_path / "out" / "b" / "z_out.png",
    ]
    assert not plan.collisions


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    a = _image(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.s2l").write_bytes(b"old")
    plan, _ = _plan([a], out, ext="s2l")
    assert plan.outputs == [] and plan.existing == [(a, out / "a.s2l")]
    assert "already exists" in next(plan.notes())
    plan, _ = _plan([a], out, ext="s2l", overwrite=True)
    assert [item.target("s2l") for item in plan.outputs] == [out / "a.s2l"] and not plan.existing


def test_an_output_that_is_an_input_is_never_planned(tmp_path):
    a = _image(tmp_path / "a.png")
    plan, _ = _plan([a], tmp_path, ext="png", overwrite=True)
    assert plan.outputs == [] and plan.failed and "would overwrite the input" in plan.failed[0][1]
    plan, _ = _plan([a], tmp_path, ext=None, overwrite=True)  # --ext auto: the input's own format
    assert plan.outputs == [] and plan.failed


def test_earlier_outputs_in_the_output_folder_are_not_inputs(tmp_path):
    src = tmp_path / "in"
    _image(src / "a.png")
    _image(src / "a_out.png")  # an earlier run's output
    _image(src / "b_1_out.png")
    plan, _ = _plan([src], src, suffix="out")
    assert [item.source.name for item in plan.outputs] == ["a.png"]
    assert sorted(p.name for p in plan.earlier_outputs) == ["a_out.png", "b_1_out.png"]
    # named on the command line, a file is an input whatever its name
    plan, _ = _plan([src / "a_out.png"], src, suffix="out")
    assert [item.name for item in plan.outputs] == ["a_out_out"]
    # without a suffix: the output another input would get, in -o inside the input tree (-r)
    out = src / "results"
    _image(out / "a.png")
    plan, _ = _plan([src], out, suffix="", recursive=True)
    assert out / "a.png" in plan.earlier_outputs
    assert all(not rio.is_image_file(p) or p.parent == src for p in (i.source for i in plan.outputs))


def test_write_atomically_and_write_image_keep_existing_files_when_asked(tmp_path):
    target = tmp_path / "t.png"
    target.write_bytes(b"original")
    with pytest.raises(OutputExistsError, match="already exists"):
        rio.write_atomically(target, b"new", overwrite=False)
    with pytest.raises(OutputExistsError):
        rio.write_image(target, np.zeros((4, 4, 3), np.float32), overwrite=False)
    assert target.read_bytes() == b"original"
    assert [p.name for p in tmp_path.iterdir()] == ["t.png"]  # no temporary file left
    rio.write_atomically(tmp_path / "new.bin", b"x", overwrite=False)
    assert (tmp_path / "new.bin").read_bytes() == b"x"
    rio.write_atomically(target, b"replaced")
    assert target.read_bytes() == b"replaced"


# ---------------------------------------------------------------------------------------------------
# restorer infer
# ---------------------------------------------------------------------------------------------------


def test_infer_writes_every_input_when_names_collide(tiny_zoo, tmp_path, capsys):
    src = tmp_path / "in"
    names = ("x.png", "x.PNG", "y.jpg", "y.jpeg", "w.png", "w.webp")
    for seed, name in enumerate(names):
        _image(src / name, seed)
    d1, d2 = _image(tmp_path / "d1" / "z.png", 7), _image(tmp_path / "d2" / "z.png", 8)
    out = tmp_path / "out"
    assert _infer(str(src), str(d1), str(d2), "-o", str(out), "--ext", "png") == 0
    err = capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(
        [
            "x_1_out.png",
            "x_2_out.png",
            "y_jpg_out.png",
            "y_jpeg_out.png",
            "w_png_out.png",
            "w_webp_out.png",
            "z_1_out.png",
            "z_2_out.png",
        ]
    )
    assert "Wrote 8 image(s)" in err and "8 output(s) renamed" in err
    # every output is its own input's result, not a copy of another's
    assert len({(out / name).read_bytes() for name in written}) == 8


def test_infer_keeps_an_existing_output_unless_overwrite(tiny_zoo, tmp_path, capsys):
    a = _image(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_out.png").write_bytes(b"precious")
    assert _infer(str(a), "-o", str(out)) == 0
    err = capsys.readouterr().err
    assert (out / "a_out.png").read_bytes() == b"precious"
    assert "already exists" in err and "--overwrite" in err and "Wrote 0 image(s)" in err
    assert _infer(str(a), "-o", str(out), "--ext", "png") == 0  # fixed format: decided in the plan
    assert (out / "a_out.png").read_bytes() == b"precious"
    assert _infer(str(a), "-o", str(out), "--overwrite") == 0
    assert rio.read_image(out / "a_out.png").pixels.shape == (32, 48, 3)


def test_infer_into_its_input_folder_twice_reads_no_output_back(tiny_zoo, tmp_path, capsys):
    src = tmp_path / "in"
    _image(src / "a.png")
    before = (src / "a.png").read_bytes()
    assert _infer(str(src), "-o", str(src)) == 0
    first = (src / "a_out.png").read_bytes()
    capsys.readouterr()
    assert _infer(str(src), "-o", str(src)) == 0
    err = capsys.readouterr().err
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "a_out.png"]
    assert (src / "a.png").read_bytes() == before and (src / "a_out.png").read_bytes() == first
    assert "not reading" in err and "a_out.png" in err


def test_infer_refuses_to_write_over_an_input_even_with_overwrite(tiny_zoo, tmp_path, capsys):
    a = _image(tmp_path / "a.png")
    before = a.read_bytes()
    assert _infer(str(a), "-o", str(tmp_path), "--suffix", "", "--overwrite") == 1
    assert a.read_bytes() == before
    assert "would overwrite the input" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-2", "NaN", "1e999"])
def test_bad_outscale_is_a_usage_error(value, tmp_path, capsys):
    a = _image(tmp_path / "a.png")
    assert _code(["infer", "--task", "sr_x2", str(a), "-o", str(tmp_path / "o"), f"--outscale={value}"]) == 2
    err = capsys.readouterr().err
    assert "must be a finite number > 0" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["../../x", "a/b", "a\\b", "..", "x/../../y"])
def test_suffix_with_a_path_is_a_usage_error(value, tmp_path, capsys):
    a = _image(tmp_path / "a.png")
    assert _code(["infer", "--task", "sr_x2", str(a), "-o", str(tmp_path / "o"), f"--suffix={value}"]) == 2
    assert "plain name part" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# ---------------------------------------------------------------------------------------------------
# restorer compress / decompress (tiny random-init S2LIC, as in test_codec.py)
# ---------------------------------------------------------------------------------------------------

_run = test_codec._run


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()[60:130, 150:240].copy()  # 70 x 90


@pytest.fixture
def codec_zoo(monkeypatch, tmp_path, photo):
    """``tiny-s2lic-q1`` with its weights in a temporary weights folder."""
    from types import MappingProxyType

    import torch

    from restorer import zoo

    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    entry = test_codec._entry("tiny-s2lic-q1")
    model = test_codec.tiny_codec(image=photo).model
    torch.save({"params": model.state_dict()}, weights_dir / entry.weight_file)
    monkeypatch.setattr(zoo, "ZOO", MappingProxyType({entry.key: entry, **zoo.ZOO}))
    monkeypatch.setenv("RESTORER_WEIGHTS_DIR", str(weights_dir))
    return weights_dir


def test_cli_decompress_never_replaces_the_original_photo(codec_zoo, tmp_path, photo, capsys):
    """Issue 21: `compress photo.png -o DIR` then `decompress DIR/photo.s2l -o DIR` replaced the photo."""
    folder = tmp_path / "dir"
    original = rio.write_image(folder / "photo.png", photo.astype(np.float32) / 255)
    before = original.read_bytes()
    assert _run(["compress", str(original), "-o", str(folder), "-m", "tiny-s2lic", "--quality", "1"]) == 0
    capsys.readouterr()
    assert _run(["decompress", str(folder / "photo.s2l"), "-o", str(folder), "-q"]) == 0
    err = capsys.readouterr().err
    assert original.read_bytes() == before
    assert "photo.png already exists" in err and "--overwrite" in err and "Wrote 0 image(s)" in err
    # two .s2l files of one name in two folders: both decoded, under distinct names
    for sub in ("d1", "d2"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "photo.s2l").write_bytes((folder / "photo.s2l").read_bytes())
    out = tmp_path / "out"
    assert _run(["decompress", str(tmp_path / "d1"), str(tmp_path / "d2" / "photo.s2l"), "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["photo_1.png", "photo_2.png"]
    assert "2 output(s) renamed" in capsys.readouterr().err
    # asked for: replaced by the decoded image
    assert _run(["decompress", str(folder / "photo.s2l"), "-o", str(folder), "--overwrite", "-q"]) == 0
    assert original.read_bytes() != before
    assert rio.read_image(original).pixels.shape == (70, 90, 3)


def test_cli_compress_names_collisions_apart_and_keeps_existing_files(codec_zoo, tmp_path, photo, capsys):
    src = tmp_path / "in"
    pixels = photo.astype(np.float32) / 255
    rio.write_image(src / "a" / "p.png", pixels)
    rio.write_image(src / "b" / "p.png", pixels[::-1].copy())
    rio.write_image(src / "q.png", pixels)
    rio.write_image(src / "q.jpg", pixels)
    out = tmp_path / "out"
    argv = ["compress", str(src), "-r", "-o", str(out), "-m", "tiny-s2lic", "--quality", "1", "-q"]
    assert _run(argv) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["p_1.s2l", "p_2.s2l", "q_jpg.s2l", "q_png.s2l"]
    assert (out / "p_1.s2l").read_bytes() != (out / "p_2.s2l").read_bytes()
    capsys.readouterr()
    (out / "q_png.s2l").write_bytes(b"kept")
    assert _run(argv) == 0  # nothing left to do: every output exists
    err = capsys.readouterr().err
    assert "Wrote 0 file(s)" in err and "4 input(s) skipped" in err
    assert (out / "q_png.s2l").read_bytes() == b"kept"


def test_cli_compress_memory_error_fails_one_file_and_the_batch_goes_on(
    codec_zoo, tmp_path, photo, capsys, monkeypatch
):
    try:
        from numpy._core._exceptions import _ArrayMemoryError
    except ImportError:  # numpy 1.x
        from numpy.core._exceptions import _ArrayMemoryError

    src = tmp_path / "in"
    rio.write_image(src / "good.png", photo.astype(np.float32) / 255)
    rio.write_image(src / "huge.png", photo.astype(np.float32) / 255)
    read_image = rio.read_image

    def read_or_run_out_of_memory(path):
        if Path(path).name == "huge.png":  # what a 16000 x 16000 PNG does on a small machine
            raise _ArrayMemoryError((16000, 16000, 3), np.dtype(np.float32))
        return read_image(path)

    monkeypatch.setattr(rio, "read_image", read_or_run_out_of_memory)
    out = tmp_path / "out"
    assert _run(["compress", str(src), "-o", str(out), "-m", "tiny-s2lic", "--quality", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert (out / "good.s2l").is_file() and not (out / "huge.s2l").exists()
    assert "huge.png: not enough memory" in err and "Traceback" not in err


def test_a_fifo_or_device_is_a_clear_error_not_a_hang(tmp_path):
    import os

    from restorer import io as rio
    from restorer.errors import ImageReadError

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageReadError, match="it is a FIFO, not a regular file"):
        rio.read_image(fifo)
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    with pytest.raises(ImageReadError, match="it is a device, not a regular file"):
        rio.read_image(link)


def test_nan_weights_are_a_clear_error_at_load(tmp_path):
    import torch

    from restorer import zoo
    from restorer.archs import build_network
    from restorer.errors import CheckpointError
    from restorer.weights import load_checkpoint

    entry = zoo.get_entry("craft", 2)
    state = build_network(entry.network_options()).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][..., 0] = float("nan")
    torch.save({"params": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=f"NaN or infinite value.*in {first}"):
        load_checkpoint(build_network(entry.network_options()), tmp_path / "bad.pth", entry)


def test_an_unlistable_sub_folder_is_reported_and_the_rest_still_runs(
    tiny_zoo, tmp_path, capsys, monkeypatch
):
    src, out = tmp_path / "in", tmp_path / "out"
    _image(src / "good.png")
    _image(src / "locked" / "hidden.png")
    _image(src / "open" / "fine.png")
    listing = Path.iterdir

    def iterdir(self):  # chmod 000 does not stop root, so refuse the listing the way the OS would
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return listing(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert _infer("-r", str(src), "-o", str(out)) == 1
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "good_out.png",
        "open/fine_out.png",
    ]
    err = capsys.readouterr().err
    assert "Cannot list folder" in err and "locked" in err and "Traceback" not in err


def test_a_tree_deeper_than_the_path_limit_is_reported_and_the_rest_still_runs(tmp_path):
    src = tmp_path / "in"
    _image(src / "top.png")
    here = os.getcwd()
    try:  # build the deep tree by relative steps: its full path is longer than PATH_MAX
        os.chdir(src)
        for level in range(24):
            name = f"d{level:02d}" + "x" * 200
            os.mkdir(name)
            os.chdir(name)
        _image(Path("deep.png"))
    finally:
        os.chdir(here)
    from restorer.engine.runner import plan_jobs

    plan = plan_jobs([str(src)], tmp_path / "out", recursive=True)
    assert [item.source.name for item in plan.outputs] == ["top.png"]
    assert len(plan.failed) == 1 and "File name too long" in plan.failed[0][1]
    assert len(plan.failed[0][1]) < 400  # the message shows both ends of the path, not all of it


def test_infer_carries_the_inputs_icc_profile(tiny_zoo, tmp_path):
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = rio.write_image(
        tmp_path / "in" / "wide.jpg", np.random.default_rng(0).random((16, 24, 3)), icc_profile=profile
    )
    assert _infer(str(source), "-o", str(tmp_path / "out")) == 0
    assert rio.read_image(tmp_path / "out" / "wide_out.jpg").icc_profile == profile


def test_an_image_that_cannot_fit_in_memory_is_refused_before_decoding(
    tiny_zoo, tmp_path, capsys, monkeypatch
):
    from restorer.engine import budget

    src, out = tmp_path / "in", tmp_path / "out"
    _image(src / "small.png", size=(16, 24))
    _image(src / "large.png", size=(200, 300))
    # Room for the small job (16 x 24 at x2: ~0.1 MB) and not the large one (~15 MB).
    monkeypatch.setattr(budget, "available_memory", lambda: 2 * budget.image_job_bytes(16, 24, 2))
    decoded = []
    read = rio.read_image
    monkeypatch.setattr(rio, "read_image", lambda path: decoded.append(Path(path).name) or read(path))
    assert _infer(str(src), "-o", str(out)) == 1
    assert [p.name for p in out.iterdir()] == ["small_out.png"]
    assert decoded == ["small.png"]  # the large one was refused from its header
    err = capsys.readouterr().err
    assert "300 x 200 image at x2 (600 x 400 out) needs about" in err and "megapixels fit" in err


def test_the_memory_estimate_grows_with_the_output():
    from restorer.engine.budget import image_job_bytes

    assert image_job_bytes(8000, 8000, 4) > 12 * 2**30  # the float32 x4 canvas alone is 12 GiB
    assert image_job_bytes(100, 100, 4) > image_job_bytes(100, 100, 2) > image_job_bytes(100, 100, 1)


# ---------------------------------------------------------------------------------------------------
# Special entries and the memory budget of compress / decompress (the fuzz suite's former xfails)
# ---------------------------------------------------------------------------------------------------


def _specials(folder: Path) -> list[str]:
    """A FIFO, a dangling link, a link loop and a link to a device in ``folder``, all with image names."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "pipe.png")
    (folder / "dangling.jpg").symlink_to("nowhere.jpg")
    (folder / "loop.png").symlink_to("loop.png")
    (folder / "zero.webp").symlink_to("/dev/zero")
    return ["dangling.jpg", "loop.png", "pipe.png", "zero.webp"]


def _failed_names(err: str) -> dict[str, str]:
    """``{file name: message}`` of the end-of-batch failure summary."""
    lines = err.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("failed:"))
    found = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        path, _, message = line[2:].partition(": ")
        found[Path(path).name] = message
    return found


def test_special_entries_of_a_folder_are_failures_not_silently_dropped(tiny_zoo, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _image(src / "good.png")
    names = _specials(src)
    with deadline(60):
        assert _infer(str(src), "-o", str(out)) == 1
    assert [p.name for p in out.iterdir()] == ["good_out.png"]
    err = capsys.readouterr().err
    failed = _failed_names(err)
    assert sorted(failed) == names and "Traceback" not in err
    assert "it is a FIFO, not a regular file" in failed["pipe.png"]
    assert "it is a device" in failed["zero.webp"] and "loop of symbolic links" in failed["loop.png"]
    assert "does not exist" in failed["dangling.jpg"]


def test_compress_reports_special_entries_and_refuses_by_memory_budget(
    codec_zoo, tmp_path, photo, capsys, monkeypatch
):
    from restorer.engine import budget

    src, out = tmp_path / "in", tmp_path / "out"
    rio.write_image(src / "small.png", photo.astype(np.float32) / 255)  # 70 x 90
    _image(src / "large.png", size=(300, 400))
    names = _specials(src)
    # room for the small image with the tiny model (N = 16), not for the large one
    monkeypatch.setattr(budget, "available_memory", lambda: 2 * budget.codec_job_bytes(70, 90, 16))
    decoded = []
    read = rio.read_image
    monkeypatch.setattr(rio, "read_image", lambda path: decoded.append(Path(path).name) or read(path))
    with deadline(60):
        argv = ["compress", str(src), "-o", str(out), "-m", "tiny-s2lic", "--quality", "1", "-q"]
        assert _run(argv) == 1
    assert [p.name for p in out.iterdir()] == ["small.s2l"]
    assert decoded == ["small.png"]  # the large one was refused from its header, before decoding
    err = capsys.readouterr().err
    failed = _failed_names(err)
    assert sorted(failed) == sorted([*names, "large.png"]) and "Traceback" not in err
    assert "a 400 x 300 image needs about" in failed["large.png"] and "to compress" in failed["large.png"]


def test_decompress_refuses_special_files_and_by_memory_budget(
    codec_zoo, tmp_path, photo, capsys, monkeypatch
):
    from restorer.codec.api import compress_image, load_codec
    from restorer.engine import budget

    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    codec = load_codec("tiny-s2lic-q1")
    (src / "small.s2l").write_bytes(compress_image(codec, photo))
    (src / "large.s2l").write_bytes(compress_image(codec, np.tile(photo, (4, 4, 1))))  # 280 x 360
    os.mkfifo(src / "pipe.s2l")
    (src / "zero.s2l").symlink_to("/dev/zero")
    monkeypatch.setattr(budget, "available_memory", lambda: 2 * budget.codec_job_bytes(70, 90, 16))
    argv = ["decompress", *(str(src / n) for n in ("small.s2l", "large.s2l", "pipe.s2l", "zero.s2l"))]
    with deadline(60):
        assert _run([*argv, "-o", str(out), "-q"]) == 1
    assert [p.name for p in out.iterdir()] == ["small.png"]
    err = capsys.readouterr().err
    failed = _failed_names(err)
    assert sorted(failed) == ["large.s2l", "pipe.s2l", "zero.s2l"] and "Traceback" not in err
    assert "declares a 360 x 280 image, which needs about" in failed["large.s2l"]
    assert "it is a FIFO, not a regular file" in failed["pipe.s2l"] and "device" in failed["zero.s2l"]
