#!/usr/bin/env bash
# The one command to give the device tool (a lent GPU) to train every bundled default in ~10 minutes:
#   run(command="bash bench/run_gpu_train.sh", carry=["datasets/corpus/sources", ".whl"], timeout_s=600)
# Before: `python datasets/make_training_set.py` here (fills datasets/corpus/sources/, 11 MB), and the
# wheels the device lacks in .whl/ (see .library/device/README.md: basicsr, compressai, ... for cp312).
# Size: the device tool takes 64 MiB of tree + carry; the tracked tree is 62.7 MiB today (the two s2lic-small
# files are 49 MB of it), so shrink those before carrying the corpus.
# After: the weights and summary.json come back under $OUT; copy the ones that beat the shipped files
# on the corpus validation split into restorer/bundled/, then `restorer benchmark` them here.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH="${PYTHONPATH:-$PWD}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 datasets/make_training_set.py --no-skimage-sr
python3 bench/gpu_train_defaults.py --out "${OUT:-results/gpu_train}" --minutes "${MINUTES:-8}"
