#!/usr/bin/env bash
# The GPU check of issue 18 as one command (bench/gpu_check.py; its docstring says what is checked).
#
# On a lent GPU machine, through the device tool (no network there; its python3 has torch, not basicsr,
# compressai or pytorch-msssim, which travel as wheels in the git-ignored .whl/):
#     run: command "bash bench/run_gpu_check.sh", carry [".whl"], timeout_s 420
#     -> $OUT/gpu_check.json (the report), $OUT/gpu_check.log (stderr), $OUT/nvidia-smi.txt
# Once, beforehand, on a machine that reaches the package registry (fills .whl/, about 0.7 MB):
#     bash bench/run_gpu_check.sh --prepare
# Extra arguments go to gpu_check.py, e.g. `--only wkv_cuda oom_retry` for a rerun of two checks.
# GPU_CHECK_DEVICE=cpu runs the CPU dry run instead (add --quick for the smoke test); PYTHON picks the
# interpreter (default: .venv/bin/python where it imports torch, else python3).
# Exit status: gpu_check.py's (1 when any check failed), or 3 when the packages cannot be set up.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 3

# The device's python3 is 3.12 (/work/.library/device/KINDS.md); these are the versions pinned here.
WHEELS=(basicsr==1.4.2 compressai==1.2.8 pytorch-msssim==1.0.0)
MODULES="basicsr compressai pytorch_msssim"

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=python3
fi

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .whl
    # basicsr 1.4.2 is published as a source archive only: build its pure-Python wheel here (its
    # setup.py imports torch, hence no build isolation).
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl basicsr==1.4.2 || exit 3
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_34_x86_64 --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl compressai==1.2.8 pytorch-msssim==1.0.0 || exit 3
    ls -l .whl
    exit 0
fi

missing() {  # find_spec, not import: basicsr only imports after restorer's torchvision shim
    "$PY" -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" \
        $MODULES 2>/dev/null && return 1
    return 0
}
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "run_gpu_check: torch does not import with $PY: pip install -e ." >&2
    "$PY" -m pip install -q -e . || exit 3
elif missing; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        echo "run_gpu_check: installing .whl/ (${WHEELS[*]}) into /tmp/restorer_site" >&2
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/restorer_site .whl/*.whl || exit 3
        export PYTHONPATH="/tmp/restorer_site${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "run_gpu_check: $MODULES missing and no .whl/: pip install -e . (needs the registry)" >&2
        "$PY" -m pip install -q -e . || exit 3
    fi
fi

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export MAX_JOBS="${MAX_JOBS:-16}"  # ninja jobs for the WKV kernel build
DEST="${OUT:-results/gpu_check}"
mkdir -p "$DEST"
command -v nvidia-smi >/dev/null && nvidia-smi >"$DEST/nvidia-smi.txt" 2>&1

"$PY" bench/gpu_check.py --device "${GPU_CHECK_DEVICE:-cuda}" --out "$DEST/gpu_check.json" "$@" \
    >"$DEST/gpu_check.stdout" 2> >(tee "$DEST/gpu_check.log" >&2)
rc=$?
wait  # for tee
# The report is in $DEST/gpu_check.json; the end of the output says how it went, whatever its length.
"$PY" - "$DEST/gpu_check.json" <<'PY'
import json, sys

try:
    report = json.load(open(sys.argv[1]))
except Exception as exc:
    sys.exit(f"run_gpu_check: no report ({exc})")
for name, check in report["checks"].items():
    why = check.get("error") or check.get("reason") or ""
    print(f"{name:18s} {check['status']:8s} {check.get('seconds', '')!s:>8} s  {why[:300]}")
print(f"ok={report['ok']} total={report['seconds']} s ({report['plan']} plan)")
PY
rm -f "$DEST/gpu_check.stdout"
exit $rc
