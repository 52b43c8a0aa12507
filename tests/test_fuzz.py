"""Issue 21 ("Nothing lost, nothing silent"): the fuzz suite.

``tests/fuzz/make_fuzz_inputs.py`` generates several hundred bad and odd inputs (zero-byte, truncated,
header-inconsistent, decompression bombs, odd but valid formats, garbage, symbolic links, FIFOs, name
collisions, corrupt ``.s2l`` files, damaged DICOM / NIfTI, malicious pickles as ``--weights``), batched
into a few dozen CLI calls with tiny random-init models; ``tests/fuzz/fuzz_driver.py`` runs each call in
a forked child with a deadline and an address-space limit and lists the whole tree before and after.

For every call (``test_invocation``): it ends before its deadline (no hang), with the expected exit
status, no traceback, nothing created, changed or removed outside its ``-o`` folder (inputs, weights,
``TMPDIR`` and ``HOME`` included), no hidden temporary file left in ``-o``, the failure summary naming
exactly the inputs that must fail and "Wrote N" counting exactly the ones that must be written, no
malicious pickle's marker file, and a resident set that grew by less than 512 MB (bombs are refused
from their headers). For every input (``test_case``): its bytes unchanged (SHA-256 at generation,
before and after), and either its output written, complete and decodable with the expected size,
channels, alpha and bit depth, or its failure reported with no output. Known product bugs are
``xfail(strict=True)`` with the reason; they become passing tests when fixed.

Deselect with ``-m 'not fuzz'``. About 45 s on an idle 2-core CPU, three and a half minutes while two
trainings share it (most of it waiting for the CPU; 22 s of CPU time).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import make_fuzz_inputs as fz  # noqa: E402

pytestmark = pytest.mark.fuzz

RSS_GROWTH_LIMIT = 512 << 20
"""Most a call's resident memory may grow (tiny models, tiny images; a bomb must be refused first)."""

_PLAN = fz.plan()


def _invocation_params():
    params = []
    for invocation in _PLAN:
        if invocation.canary:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=invocation.xfail)] if invocation.xfail else []
        params.append(pytest.param(invocation.name, marks=marks, id=invocation.name))
    return params


def _case_params():
    params = []
    for invocation in _PLAN:
        if invocation.canary:
            continue
        for case in invocation.cases:
            if case.expect == fz.WRITTEN and case.output is None:
                continue  # a helper (link target, the image of a weights test): checked as unchanged below
            marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
            params.append(pytest.param(invocation.name, case.id, marks=marks, id=case.id))
    return params


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    """Generate every case, run every invocation; ``(root, manifest, results by name)``."""
    base = tmp_path_factory.mktemp("fuzz")
    root, results_dir = base / "root", base / "results"
    manifest = fz.generate(root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    budget = sum(inv["timeout"] for inv in manifest["invocations"]) + 120
    completed = subprocess.run(
        [sys.executable, str(FUZZ_DIR / "fuzz_driver.py"), str(root), str(results_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=budget,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = {}
    for line in (results_dir / "results.jsonl").read_text().splitlines():
        result = json.loads(line)
        results[result["name"]] = result
    manifest = {inv["name"]: inv for inv in manifest["invocations"]}
    assert set(results) == set(manifest), "the driver ran every invocation once"
    return root, manifest, results


# ---------------------------------------------------------------------------------------------------
# Reading a result
# ---------------------------------------------------------------------------------------------------

_SUMMARY = re.compile(r"^(\d+) (?:image|file|result)\(s\) failed:$")
_WROTE = re.compile(r"^Wrote (\d+) ")


def failures(stderr: str) -> dict[str, str]:
    """``{path: message}`` from the end-of-batch failure summary."""
    lines = stderr.splitlines()
    found: dict[str, str] = {}
    for index, line in enumerate(lines):
        if _SUMMARY.match(line):
            for entry in lines[index + 1 :]:
                if not entry.startswith("  "):
                    break
                path, _, message = entry[2:].partition(": ")
                found[path] = message
    return found


def failure_count(stderr: str) -> int:
    counts = [int(m.group(1)) for m in map(_SUMMARY.match, stderr.splitlines()) if m]
    return sum(counts)


def written_count(stderr: str) -> int | None:
    counts = [int(m.group(1)) for m in map(_WROTE.match, stderr.splitlines()) if m]
    return counts[-1] if counts else None


def rss_growth(stdout: str) -> int | None:
    match = re.search(r"\[fuzz-driver\] rss-growth (\d+)", stdout)
    return int(match.group(1)) if match else None


def _under(rel: str, folder: str) -> bool:
    return rel == folder or rel.startswith(folder + "/")


def changes_outside(result: dict, out_folder: str) -> list[str]:
    before, after = result["before"], result["after"]
    changed = [
        f"{what}: {rel}"
        for what, paths in (
            ("created", after.keys() - before.keys()),
            ("removed", before.keys() - after.keys()),
            ("changed", {rel for rel in before.keys() & after.keys() if before[rel] != after[rel]}),
        )
        for rel in sorted(paths)
        if not _under(rel, out_folder)
        and not any(_under(rel, other) for other in result.get("others_out", []))
    ]
    return changed


def _outputs(folder: Path, output: str) -> list[Path]:
    """Files and folders in the output's folder whose name, up to the first dot, is the output's."""
    parent, base = (folder / output).parent, Path(output).name
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.name.split(".")[0] == base)


def _check_image(path: Path, props: dict) -> None:
    from restorer import io as rio

    image = rio.read_image(path)  # a partial file would not decode
    if "size" in props:
        assert [image.height, image.width] == props["size"], f"{path.name}: size"
    if "channels" in props:
        assert image.pixels.shape[2] == props["channels"], f"{path.name}: channels"
    if props.get("gray"):  # one channel, or three equal ones
        pixels = image.pixels
        assert pixels.shape[2] == 1 or (pixels == pixels[:, :, :1]).all(), f"{path.name}: not gray"
    if "alpha" in props:
        assert image.has_alpha == props["alpha"], f"{path.name}: alpha"
    if "bit_depth" in props:
        assert image.bit_depth == props["bit_depth"], f"{path.name}: bit depth"


def _check_output(path: Path, props: dict) -> None:
    if props.get("s2l"):
        from restorer.codec import container

        header, streams = container.unpack(path.read_bytes())
        assert header.variant == "tiny-s2lic-q1" and len(streams) == 2
    elif "nifti" in props:
        import nibabel as nib

        assert list(nib.load(str(path)).get_fdata().shape) == props["nifti"]
    elif "dicom_series" in props:
        import pydicom

        files = sorted(path.iterdir())
        assert len(files) == props["dicom_series"]
        for file in files:
            assert pydicom.dcmread(file).pixel_array.shape == (24, 32)
    else:
        _check_image(path, props)


# ---------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------


def test_the_plan_covers_every_class_with_hundreds_of_inputs():
    cases = fz.fuzz_cases(_PLAN)
    by_class: dict[str, int] = {}
    for case in cases:
        by_class[case.cls] = by_class.get(case.cls, 0) + 1
    assert len(cases) >= 200
    for cls in (
        "zero_byte",
        "truncated",
        "header_jpeg",
        "bomb",
        "odd_valid",
        "garbage",
        "symlink",
        "special_in_folder",
        "special_named",
        "collision",
        "s2l",
        "medical",
        "weights",
        "compress",
    ):
        assert by_class.get(cls, 0) >= 5, cls


@pytest.mark.parametrize("name", _invocation_params())
def test_invocation(fuzz, name):
    root, manifest, results = fuzz
    invocation, result = manifest[name], results[name]
    where = f"restorer {' '.join(invocation['argv'])} (in {root / name})"
    err = result["stderr"]
    assert not result["timed_out"], f"{where}: hung past {invocation['timeout']} s\n{err[-3000:]}"
    assert "Traceback" not in err + result["stdout"], f"{where}: traceback\n{err[-3000:]}"
    expected_rc = invocation["rc"]
    if expected_rc == -1:
        assert result["rc"] in (1, 2), f"{where}: exit status {result['rc']}\n{err[-2000:]}"
    else:
        assert result["rc"] == expected_rc, f"{where}: exit status {result['rc']}\n{err[-2000:]}"
    assert changes_outside(result, f"{name}/out") == [], where
    out = root / name / "out"
    hidden = [str(p.relative_to(out)) for p in out.rglob(".*")] if out.is_dir() else []
    assert hidden == [], f"{where}: temporary or partial files left in -o"
    growth = rss_growth(result["stdout"])
    assert growth is not None and growth < RSS_GROWTH_LIMIT, (
        f"{where}: resident memory grew by {growth} bytes"
    )
    if invocation["marker"]:
        assert not list(root.rglob(invocation["marker"])), f"{where}: the pickle ran code"
    cases = invocation["cases"]
    if any(case["expect"] == fz.ERROR for case in cases):  # a one-line error, or the file's failure
        assert re.search(r"^error: |^\d+ .*failed:$", err, re.M), f"{where}: no error\n{err[-2000:]}"
        assert not out.exists() or not any(out.iterdir()), f"{where}: wrote something"
        return
    to_fail = [case for case in cases if case["expect"] == fz.FAILED]
    assert failure_count(err) == len(to_fail), f"{where}: failures reported\n{err[-3000:]}"
    outputs = {
        case["output"] if case["output"] != "out/*" else case["id"]
        for case in cases
        if case["expect"] == fz.WRITTEN and case["output"]
    }
    assert written_count(err) == len(outputs), f"{where}: outputs written\n{err[-3000:]}"


@pytest.mark.parametrize(("name", "case_id"), _case_params())
def test_case(fuzz, name, case_id):
    root, manifest, results = fuzz
    invocation, result = manifest[name], results[name]
    case = next(c for c in invocation["cases"] if c["id"] == case_id)
    folder = root / name
    where = f"{case['path']} in restorer {' '.join(invocation['argv'])} (in {folder})"
    path = case["path"]
    assert result["before"].get(path) == result["after"].get(path), f"{where}: the input changed"
    assert fz.sha256(folder / path) == case["sha256"], f"{where}: the input changed"
    assert not result["timed_out"], f"{where}: the call hung\n{result['stderr'][-3000:]}"
    err = result["stderr"]
    if case["expect"] == fz.WRITTEN:
        if case["output"] == "out/*":  # a collision: its own output, traced by its unique size
            from restorer import io as rio

            sizes = {
                p.name: [rio.read_image(p).height, rio.read_image(p).width]
                for p in (folder / "out").iterdir()
            }
            assert case["props"]["size"] in sizes.values(), f"{where}: no output of its size"
            return
        if case["output_exact"]:
            target = folder / case["output"]
            assert target.exists(), f"{where}: not written\n{err[-3000:]}"
        else:
            found = _outputs(folder, case["output"])
            assert len(found) == 1, f"{where}: outputs {found}\n{err[-3000:]}"
            target = found[0]
        _check_output(target, case["props"])
    elif case["expect"] == fz.FAILED:
        reported = case["reported"] or path
        found = {p: m for p, m in failures(err).items() if p == reported or p.startswith(reported + "/")}
        assert found, f"{where}: not reported as failed\n{err[-3000:]}"
        if case["message"]:
            message = " ".join(found.values())
            assert re.search(case["message"], message), f"{where}: {message}"
            assert "not enough memory for this file" not in message, f"{where}: {message}"
        if case["output_exact"]:
            assert not os.path.lexists(folder / case["output"]), f"{where}: an output was written"
        else:
            assert _outputs(folder, case["output"]) == [], f"{where}: an output was written"
    else:  # ERROR: the command stops with a one-line message naming the file, and writes nothing
        assert result["rc"] in (1, 2), where
        assert "Traceback" not in err, where
        assert path in err or Path(path).name in err, f"{where}: the message does not name the file\n{err}"
        out = folder / "out"
        assert not out.exists() or not any(out.iterdir()), f"{where}: wrote something"
        if invocation["marker"]:
            assert not (folder / invocation["marker"]).exists(), f"{where}: the pickle ran code"


def test_helpers_are_unchanged(fuzz):
    """Link targets and the images of the weights tests: not fuzz cases themselves, never touched."""
    root, manifest, results = fuzz
    for name, invocation in manifest.items():
        for case in invocation["cases"]:
            if case["expect"] == fz.WRITTEN and case["output"] is None:
                assert fz.sha256(root / name / case["path"]) == case["sha256"], case["id"]
                result = results[name]
                assert result["before"].get(case["path"]) == result["after"].get(case["path"]), case["id"]


def test_the_harness_sees_a_file_written_outside_out(fuzz):
    """The canary writes its output to ``-o elsewhere``: the tree comparison must name that file (and the
    same call, checked against its real ``-o``, finds nothing)."""
    root, manifest, results = fuzz
    result = results["canary_outside_out"]
    assert result["rc"] == 0 and not result["timed_out"]
    assert changes_outside(result, "canary_outside_out/out") == [
        "created: canary_outside_out/elsewhere",
        "created: canary_outside_out/elsewhere/image_out.png",
    ]
    assert changes_outside(result, "canary_outside_out/elsewhere") == []


def test_the_summary_parsers():
    stderr = (
        "note: skipping in/x.txt (not an image file)\n"
        "Wrote 2 image(s) to out/\n"
        "2 image(s) failed:\n"
        "  in/a.png: Cannot read image in/a.png: the file is empty\n"
        "  in/b c.jpg: in/b c.jpg: a 9 x 9 image needs about 1.0 GiB\n"
        "error: after the summary\n"
    )
    assert failures(stderr) == {
        "in/a.png": "Cannot read image in/a.png: the file is empty",
        "in/b c.jpg": "in/b c.jpg: a 9 x 9 image needs about 1.0 GiB",
    }
    assert failure_count(stderr) == 2 and written_count(stderr) == 2
    assert failures("Wrote 1 image(s) to out/\n") == {} and failure_count("") == 0
    assert rss_growth("x\n[fuzz-driver] rss-growth 1234\n") == 1234 and rss_growth("") is None
