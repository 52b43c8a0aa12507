"""Run the CLI invocations of a fuzz manifest, each in a forked child with a time and memory limit.

``python tests/fuzz/fuzz_driver.py ROOT RESULTS [--only NAME ...]`` reads ``ROOT/manifest.json`` (written
by ``make_fuzz_inputs.py``), imports torch and restorer once, then for each invocation forks a child
that runs ``restorer.cli.main(argv)`` in ``ROOT/<name>`` as the ``restorer`` command would (an exception
that escapes is printed as a traceback, exit status 1). The child is the leader of its own process
group, gets its own ``TMPDIR`` and ``HOME`` inside its folder, an address-space limit (so a file that
makes the product allocate without bound fails there instead of taking the machine down) and a
deadline: past it the group is killed and the invocation recorded as timed out (a hang).

Around each call the whole ``ROOT`` tree is listed (type, size, SHA-256 of regular files, link targets;
FIFOs and devices are never opened), so the caller can tell what changed outside the output folder.
One JSON line per invocation goes to ``RESULTS/results.jsonl``; stdout and stderr to
``RESULTS/<name>.out`` / ``.err``. The driver itself runs no tensor code before forking (fork safety).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ADDRESS_SPACE_HEADROOM = 2 << 30
"""Bytes of address space a child may add to what the driver has mapped after importing torch."""

_DIGESTS: dict[tuple, str] = {}
"""SHA-256 of regular files by (path, inode, size, mtime, ctime): unchanged files are not read again."""


def snapshot(root: Path) -> dict[str, list]:
    """Every entry under ``root`` (not following links): ``[kind, detail]`` by relative path."""
    entries: dict[str, list] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            try:
                info = os.lstat(path)
            except OSError as exc:
                entries[rel] = ["gone", str(exc)]
                continue
            if stat.S_ISLNK(info.st_mode):
                entries[rel] = ["link", os.readlink(path)]
            elif stat.S_ISDIR(info.st_mode):
                entries[rel] = ["dir", ""]
            elif stat.S_ISREG(info.st_mode):
                key = (rel, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
                if key not in _DIGESTS:
                    _DIGESTS[key] = hashlib.sha256(path.read_bytes()).hexdigest()
                entries[rel] = ["file", _DIGESTS[key]]
            else:
                entries[rel] = ["special", stat.S_IFMT(info.st_mode)]
    return entries


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    return 0


def _rss_note(start_rss: int) -> None:
    """Written to stdout at exit: how far the resident set grew above what the child started with."""
    print(f"[fuzz-driver] rss-growth {max(0, _status('VmHWM') - start_rss)}", file=sys.stdout)


def _child(invocation: dict, root: Path, results: Path, weights: Path) -> None:
    """In the forked child: limits, environment, redirections, then the CLI. Never returns."""
    import resource

    os.setpgid(0, 0)
    code = 1
    start_rss = _status("VmRSS")
    try:
        limit = _status("VmSize") + ADDRESS_SPACE_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        folder = root / invocation["name"]
        out_fd = os.open(results / f"{invocation['name']}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err_fd = os.open(results / f"{invocation['name']}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
        import faulthandler

        faulthandler.register(signal.SIGUSR1, file=sys.stderr)  # the driver asks for the stack of a hang
        os.chdir(folder)
        os.environ.update({"TMPDIR": str(folder / "tmp"), "HOME": str(folder / "home")})
        import tempfile

        tempfile.tempdir = None  # re-read TMPDIR

        import torch

        torch.set_num_threads(1)
        from make_fuzz_inputs import tiny_zoo

        from restorer import io as rio
        from restorer.cli import main
        from restorer.engine import budget

        limits = invocation.get("limits") or {}
        if "max_image_pixels" in limits:
            rio.MAX_IMAGE_PIXELS = limits["max_image_pixels"]
        if "available_memory" in limits:
            budget.available_memory = lambda: limits["available_memory"]
        with tiny_zoo(weights):
            try:
                code = main(invocation["argv"])
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the console script would show: a traceback, exit status 1
                import traceback

                traceback.print_exc()
                code = 1
        _rss_note(start_rss)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) and 0 <= code < 256 else 1)


def run_together(
    invocations: list[dict], root: Path, results: Path, weights: Path, before: dict
) -> list[dict]:
    """Run invocations at the same time (one, or a group of calls over single special files, which mostly
    wait); ``before`` is the tree as it is now. Each result lists the other members' output folders: what
    changes there is theirs."""
    start = time.monotonic()
    running: dict[int, dict] = {}
    for invocation in invocations:
        pid = os.fork()
        if pid == 0:
            _child(invocation, root, results, weights)
        running[pid] = {"invocation": invocation, "deadline": start + float(invocation["timeout"])}
    while any("status" not in item for item in running.values()):
        for pid, item in running.items():
            if "status" in item:
                continue
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                item["status"], item["timed_out"], item["end"] = status, False, time.monotonic()
            elif time.monotonic() > item["deadline"]:
                try:
                    os.kill(pid, signal.SIGUSR1)  # where it hangs, into its stderr
                    time.sleep(0.5)
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status = os.waitpid(pid, 0)
                item["status"], item["timed_out"], item["end"] = status, True, time.monotonic()
        time.sleep(0.05)
    after = snapshot(root)
    names = [invocation["name"] for invocation in invocations]
    out = []
    for item in running.values():
        name, status = item["invocation"]["name"], item["status"]
        out.append(
            {
                "name": name,
                "rc": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status),
                "timed_out": item["timed_out"],
                "duration": round(item["end"] - start, 3),
                "stderr": (results / f"{name}.err").read_text(errors="replace"),
                "stdout": (results / f"{name}.out").read_text(errors="replace"),
                "before": before,
                "after": after,
                "others_out": [f"{other}/out" for other in names if other != name],
            }
        )
    return out


def _warm_up(weights: Path) -> None:
    """Build each tiny model once and run it on a few pixels, with one thread, before any fork: the lazy
    imports and first-call initialisations (seconds each on this CPU) are then inherited by every child
    instead of repeated. One intra-op thread means no OpenMP pool exists to be broken by fork()."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from make_fuzz_inputs import noise, tiny_zoo

    from restorer import zoo
    from restorer.codec.api import compress_image, decompress_bytes, load_codec
    from restorer.engine.runner import build_restorer

    with tiny_zoo(weights):
        codec = load_codec("tiny-s2lic-q1")
        decompress_bytes(codec, compress_image(codec, noise(16, 16, 3, "warm-up")))
        for name, channels in (("tiny-hat", 3), ("tiny-rwkv-ct-denoise", 1)):
            entry = next(e for e in zoo.ZOO.values() if e.model == name)
            restorer = build_restorer(entry, device="cpu", tile=0)
            restorer.run_array(np.zeros((16, 16, channels), np.float32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("results")
    parser.add_argument("--only", nargs="*")
    parser.add_argument(
        "--generate", action="store_true", help="write the cases into ROOT first (make_fuzz_inputs.generate)"
    )
    args = parser.parse_args(argv)
    root, results = Path(args.root).resolve(), Path(args.results).resolve()
    results.mkdir(parents=True, exist_ok=True)

    # everything the children use, imported once here; tensor code runs with one thread (fork safety)
    import torch

    torch.set_num_threads(1)
    if args.generate:
        from make_fuzz_inputs import generate

        started = time.monotonic()
        generate(root, args.only)
        print(f"generated in {time.monotonic() - started:.1f}s", flush=True)
    manifest = json.loads((root / "manifest.json").read_text())
    weights = root / manifest["weights"]

    from make_fuzz_inputs import tiny_entries

    import restorer.cli  # noqa: F401
    import restorer.codec.api  # noqa: F401
    import restorer.codec.cli  # noqa: F401
    import restorer.engine.medical_runner  # noqa: F401
    import restorer.engine.runner  # noqa: F401
    import restorer.medical  # noqa: F401

    tiny_entries()  # imports conftest and test_codec
    started = time.monotonic()
    _warm_up(weights)
    print(f"warmed up in {time.monotonic() - started:.1f}s", flush=True)
    chosen = [inv for inv in manifest["invocations"] if not args.only or inv["name"] in args.only]
    batches = [[inv] for inv in chosen if not inv.get("together")]
    groups: dict[str, list[dict]] = {}
    for inv in chosen:
        if inv.get("together"):
            groups.setdefault(inv["together"], []).append(inv)
    batches += list(groups.values())
    tree = snapshot(root)
    with open(results / "results.jsonl", "a", encoding="utf-8") as log:
        for batch in batches:
            for result in run_together(batch, root, results, weights, tree):
                tree = result["after"]
                log.write(json.dumps(result, ensure_ascii=False) + "\n")
                log.flush()
                state = "TIMEOUT" if result["timed_out"] else f"rc={result['rc']}"
                print(f"{result['name']}: {state} in {result['duration']:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
