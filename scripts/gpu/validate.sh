#!/usr/bin/env bash
# GPU validation (issue 12) in one command, on a machine with one CUDA device:
#   scripts/gpu/validate.sh OUT [tests] [ITEM ...]      (no ITEM: everything)
# 1. the GPU tests (pytest -m gpu: CPU vs CUDA selection agreement, fine-tuning on CUDA) and
#    the CPU fine-tuning tests under this machine's torch;
# 2. scripts/gpu/validation.py: selection and fine-tuning benchmarks, the workflow's stages on
#    data/tiny and data/demo with device cuda (`scripts/gpu/validation.py --list` names them).
# Needs activeft (and faiss, which activeft imports) importable; data/tiny and data/demo made
# beforehand with `snakemake stage_index stage_select stage_pretrain [--configfile ...]`.
# Writes OUT/log.txt and OUT/summary.json. Exit status: 0 when every part passed.
set -uo pipefail
OUT=${1:?usage: scripts/gpu/validate.sh OUT [tests] [ITEM ...]}
shift
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
tests=0
items=()
if [ $# -eq 0 ]; then tests=1; fi
for a in "$@"; do
    if [ "$a" = tests ]; then tests=1; else items+=("$a"); fi
done
status=0
{
    echo "=== environment $(date +%T)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
    "$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers",
transformers.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))'
    if [ $tests = 1 ]; then
        echo "=== GPU tests $(date +%T)"
        "$PY" -m pytest -q -p no:cacheprovider -m gpu \
            tests/unit/test_selection_gpu.py tests/unit/test_finetune_gpu.py || status=1
        echo "=== fine-tuning CPU tests under this torch $(date +%T)"
        "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_finetune.py || status=1
    fi
    if [ $# -eq 0 ] || [ ${#items[@]} -gt 0 ]; then
        "$PY" scripts/gpu/validation.py --out "$OUT" ${items[@]+--only "${items[@]}"} || status=1
    fi
    echo "=== done $(date +%T), status $status"
    exit $status
} 2>&1 | tee "$OUT/log.txt"
