"""Several processes, one batch: ``--distributed`` under torchrun (two gloo processes on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from restorer.cli import main
from restorer.engine.distributed import LAUNCH_VARIABLES, Shard, merge_reports, share
from restorer.engine.runner import Report

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent

# What each torchrun process runs: the tiny zoo of conftest registered, every image write logged per
# rank (so a test sees who wrote what, and how often), then a module run as `python -m MODULE ARGS`.
_WORKER = """
import os, runpy, sys
from types import MappingProxyType
sys.path.insert(0, {tests!r})
import conftest
from restorer import io as rio, zoo
tiny = [conftest.tiny_entry(scale) for scale in (2, 3, 4)]
zoo.ZOO = MappingProxyType({{**{{e.key: e for e in tiny}}, **zoo.ZOO}})
original = rio.write_image
def logged(target, *args, **kwargs):
    result = original(target, *args, **kwargs)
    with open(os.path.join({logs!r}, "writes." + os.environ["RANK"]), "a") as log:
        log.write(str(target) + "\\n")
    return result
rio.write_image = logged
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _png(path: Path, array: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", array[..., ::-1] if array.ndim == 3 else array)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture
def clean_env(monkeypatch):
    """No launcher variables, whatever the shell running the tests has set."""
    for name in (*LAUNCH_VARIABLES, "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class Torchrun:
    """``python -m torch.distributed.run --nproc_per_node 2`` on the worker script; each run's per-rank
    output and write logs are read back by rank."""

    def __init__(self, root: Path):
        self.root = root
        self.runs = 0

    def __call__(self, *args: str) -> tuple[int, dict[int, str], dict[int, list[str]]]:
        self.runs += 1
        run_dir = self.root / f"run{self.runs}"
        (run_dir / "logs").mkdir(parents=True)
        worker = run_dir / "worker.py"
        worker.write_text(_WORKER.format(tests=str(Path(__file__).parent), logs=str(run_dir)))
        env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
        env["OMP_NUM_THREADS"] = "1"  # as one_torch_thread does here: the same arithmetic, bit for bit
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        command += ["--log-dir", str(run_dir / "logs"), "--redirects", "3", str(worker), *args]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
        output = {}  # per rank: stdout then stderr (per-file errors go to stdout, the summary to stderr)
        for rank in (0, 1):
            found = sorted((run_dir / "logs").glob(f"*/attempt_0/{rank}/std*.log"), reverse=True)
            assert [path.name for path in found] == ["stdout.log", "stderr.log"], result.stderr
            output[rank] = "".join(path.read_text() for path in found)
        writes = {}
        for rank in (0, 1):
            log = run_dir / f"writes.{rank}"
            writes[rank] = log.read_text().splitlines() if log.exists() else []
        return result.returncode, output, writes


@pytest.fixture
def torchrun(tmp_path) -> Torchrun:
    return Torchrun(tmp_path / "torchrun")


@pytest.fixture
def photos(tmp_path, rgb_image) -> Path:
    """Five inputs in this order: a, b_bad (not a readable PNG), c, d, e. Dealt round-robin to two
    ranks, rank 0 gets a, c, e and rank 1 gets b_bad and d."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _png(folder / "a.png", rgb_image)
    (folder / "b_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    _png(folder / "c.png", rgb_image[..., 1])  # gray
    _png(folder / "d.png", np.roll(rgb_image, 7, axis=1))
    _png(folder / "e.png", np.flipud(rgb_image))
    return folder


# ---------------------------------------------------------------------------------------------------
# The split and the merge
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_share_deals_every_item_to_exactly_one_rank(world_size):
    items = list(range(10))
    parts = [share(items, rank, world_size) for rank in range(world_size)]
    assert sorted(sum(parts, [])) == items
    assert parts == [share(items, rank, world_size) for rank in range(world_size)]  # deterministic
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert parts[0][:2] == ([0, world_size] if world_size < 10 else [0])


def test_share_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        share([1, 2], 2, 2)


def test_merge_lists_results_in_plan_order_with_planning_entries_first():
    a, b, c, bad = (Path(name) for name in ("a.png", "b.png", "c.png", "bad.png"))
    rank0 = Report(written=[Path("a_out.png")], failed=[(bad, "would overwrite an input"), (c, "broken")])
    rank1 = Report(written=[Path("b_out.png")], failed=[(b, "broken too")])
    merged = merge_reports([rank0, rank1], {a: 0, b: 1, c: 2})
    assert len(merged.written) == 2
    assert [source for source, _ in merged.failed] == [bad, b, c]


def test_single_process_shard_is_the_identity():
    shard = Shard()
    assert not shard.active and shard.is_main and shard.label == ""
    assert shard.from_main(lambda: 42) == 42
    assert shard.take([1, 2, 3]) == [1, 2, 3]
    summary = {"psnr_y": 1.0, "images": {"x": {"psnr_y": 1.0}}}
    assert shard.merge_scores(summary, 1, ["x"]) is summary
    assert shard.finish(Report(), lambda report: 7) == 7


# ---------------------------------------------------------------------------------------------------
# Flags and launch mistakes (one process)
# ---------------------------------------------------------------------------------------------------


def _options(*args: str) -> list[str]:
    """The arguments of `restorer infer` (and of `python -m restorer.infer`) these tests use."""
    return ["--task", "sr_x2", "-m", "tiny-hat", "-q", *args]


def _infer(*args: str) -> list[str]:
    return ["infer", *_options(*args)]


def test_distributed_without_a_launcher_is_a_one_line_error(tiny_zoo, clean_env, photos, tmp_path, capsys):
    assert main(_infer("--distributed", str(photos), "-o", str(tmp_path / "out"))) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --distributed needs a launcher")
    assert "RANK" in err and "torchrun" in err
    assert not (tmp_path / "out").exists()
    dataset = tmp_path / "set"
    dataset.mkdir()
    args = ["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-d", str(dataset), "--distributed", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "restorer benchmark --distributed" in err


def test_several_processes_without_distributed_is_an_error(tiny_zoo, clean_env, photos, tmp_path, capsys):
    clean_env.setenv("WORLD_SIZE", "2")
    assert main(_infer(str(photos), "-o", str(tmp_path / "out"))) == 2
    err = capsys.readouterr().err
    assert "every one would run the whole batch" in err and "--distributed" in err
    assert not (tmp_path / "out").exists()


def test_module_entry_implies_distributed_under_a_launcher(tiny_zoo, clean_env, photos, tmp_path, capsys):
    from restorer.infer import main as infer_main

    out = tmp_path / "out"
    assert infer_main(["--task", "sr_x2", "-m", "tiny-hat", "-q", str(photos / "a.png"), "-o", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["a_out.png"]  # no launcher: a plain run
    clean_env.setenv("WORLD_SIZE", "2")
    assert infer_main(["--task", "sr_x2", "-m", "tiny-hat", str(photos), "-o", str(out)]) == 2
    assert "--distributed needs a launcher (no RANK, LOCAL_RANK, MASTER_ADDR" in capsys.readouterr().err


def test_skip_existing_refuses_overwrite_and_medical_tasks(tiny_zoo, clean_env, photos, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(_infer("--skip-existing", "--overwrite", str(photos), "-o", str(tmp_path / "out")))
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    args = ["infer", "--task", "ct_denoise", "--skip-existing", str(photos), "-o", str(tmp_path / "out")]
    assert main(args) == 2
    assert "for image tasks" in capsys.readouterr().err


def test_rerun_with_skip_existing_writes_nothing(tiny_zoo, clean_env, photos, tmp_path, capsys):
    (photos / "b_bad.png").unlink()
    out = tmp_path / "out"
    assert main(_infer(str(photos), "-o", str(out))) == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert len(before) == 4
    capsys.readouterr()
    assert main(_infer("--skip-existing", str(photos), "-o", str(out))) == 0
    err = capsys.readouterr().err
    assert "Wrote 0 image(s)" in err and "4 input(s) skipped" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


# ---------------------------------------------------------------------------------------------------
# Two gloo processes under torchrun
# ---------------------------------------------------------------------------------------------------


def test_torchrun_infer_matches_one_process_and_resumes(tiny_zoo, clean_env, photos, tmp_path, torchrun):
    single = tmp_path / "single"
    assert main(_infer(str(photos), "-o", str(single))) == 1  # b_bad fails, the rest are written
    expected = {p.name: p.read_bytes() for p in single.iterdir()}
    assert sorted(expected) == ["a_out.png", "c_out.png", "d_out.png", "e_out.png"]

    out = tmp_path / "out"
    code, logs, writes = torchrun("restorer.infer", *_options(str(photos), "-o", str(out)))
    assert code != 0, logs  # a failure on rank 1 fails the job
    assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
    written = Counter(Path(line).name for rank in (0, 1) for line in writes[rank])
    assert written == Counter(list(expected))  # every output exactly once
    assert sorted(Path(line).name for line in writes[0]) == ["a_out.png", "c_out.png", "e_out.png"]
    assert [Path(line).name for line in writes[1]] == ["d_out.png"]
    # b_bad failed on rank 1; rank 0's summary counts and names it, rank 1 prints no summary.
    assert "b_bad.png" in logs[1] and "Wrote" not in logs[1]
    assert "Wrote 4 image(s)" in logs[0] and "1 image(s) failed" in logs[0]
    assert "b_bad.png" in logs[0].split("1 image(s) failed")[1]

    # A killed job, resumed: one output is missing; only it is made, the others are not touched. With a
    # fixed --ext the plan already knows which outputs exist: d is the only job, so rank 1 has none.
    (photos / "b_bad.png").unlink()
    (out / "d_out.png").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    resume = _options("--skip-existing", "--ext", "png", str(photos), "-o", str(out))
    code, logs, writes = torchrun("restorer.infer", *resume)
    assert code == 0, logs
    assert [Path(line).name for rank in (0, 1) for line in writes[rank]] == ["d_out.png"]
    assert (out / "d_out.png").read_bytes() == expected["d_out.png"]
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert writes[1] == [] and "Wrote 1 image(s)" in logs[0] and "3 input(s) skipped" in logs[0]


def _without_timing(value):
    """Benchmark results less what differs between any two runs (seconds and memory)."""
    if isinstance(value, dict):
        return {
            k: _without_timing(v)
            for k, v in value.items()
            if k not in ("sec_per_image", "peak_memory_mb", "memory_measure")
        }
    return value


def test_torchrun_benchmark_matches_one_process(tiny_zoo, clean_env, tmp_path, rgb_image, torchrun):
    dataset = tmp_path / "set"
    dataset.mkdir()
    for index in range(3):
        _png(dataset / f"img{index}.png", np.roll(rgb_image, 9 * index, axis=0)[:48, :48])
    args = ["benchmark", "--task", "sr_x2", "-m", "tiny-hat", "-d", str(dataset), "-q"]
    assert main([*args, "-o", str(tmp_path / "single")]) == 0
    expected = json.loads((tmp_path / "single" / "sr_x2.json").read_text())

    saved = tmp_path / "saved"
    out = tmp_path / "dist"
    code, logs, writes = torchrun(
        "restorer", *args, "--distributed", "-o", str(out), "--save-images", str(saved)
    )
    assert code == 0, logs
    results = json.loads((out / "sr_x2.json").read_text())
    assert _without_timing(results) == _without_timing(expected)
    assert list(results["models"]["tiny-hat"]["datasets"]["set"]["images"]) == ["img0", "img1", "img2"]
    assert (out / "sr_x2.md").is_file()
    # Each rank restored its own images only: rank 0 the 1st and 3rd, rank 1 the 2nd.
    assert sorted(Path(line).name for line in writes[0]) == ["img0.png", "img2.png"]
    assert [Path(line).name for line in writes[1]] == ["img1.png"]
    assert "Wrote" in logs[0] and "Wrote" not in logs[1]
