#!/usr/bin/env bash
# Issue #18's device check in one command: the GPU path of lensdb measured against its targets.
#
#   bash bench/gpu_check.sh             on the GPU machine (device tool, carry [".whl"]): at most 8 minutes
#   bash bench/gpu_check.sh --dry-run   on a CPU with tiny sizes: every step's plumbing and the JSON
#                                       (tests/test_gpu_check.py runs it, so it cannot rot)
#   bash bench/gpu_check.sh --steps cuda_tests,float32_check    only these steps (install and env always run)
#
# Before a device call, run `bash bench/gpu_wheels.sh` here: it puts the wheels the GPU image lacks
# and the shared fixtures (GPT-2 tokenizer, stories260K) into the ignored folder .whl/.
#
# Steps, in order, each under `timeout` within one budget; a failed step is recorded and the next runs:
#   install           pip install --no-index --no-deps --target $WORK/site .whl/*.whl (dry-run: pip's
#                     --dry-run for Python 3.12 manylinux x86_64, when .whl/ has wheels)
#   env               GPU, driver (nvidia-smi), torch, package versions, imports
#   cuda_tests        pytest -m cuda (and multi_gpu with 2+ GPUs): on a GPU none may skip
#   float32_check     CUDA float32 records of 3 lenses vs tests/reference.py; split vs float32 unembedding
#   extract_capitals  lensdb extract of the Llama-3-8B shape (random weights, built here) over capitals,
#                     3 lenses, defaults; GPU utilisation and memory every 250 ms
#   bench_llama8b     bench/extract_bench.py --shape llama8b --n 256 --skip-seed-style --json
#   bench_gpt2        bench/extract_bench.py --shape gpt2 --n 1000 --skip-seed-style --json
#   float32_8b        (optional, when time is left) the float32 check on the full 8B shape, 2 prompts
#
# Environment: PYTHON (default python3), OUT (default: a new temp dir), GPU_CHECK_BUDGET_S (default 470;
# dry-run 600), GPU_CHECK_WORK (scratch: the built models; default a new temp dir, removed at the end
# unless GPU_CHECK_KEEP=1), LENSDB_TEST_SHARED (the shared fixtures; default .whl/shared, else ../shared).
#
# Writes $OUT/gpu_check.json (every step's status and numbers, the targets of issue #18 and whether
# each is met) and one log per step group: 7 files, 2 MiB at most each (the device returns 8).
# Exit status 0 only if every step passed and (on the GPU) every required target was met.
set -uo pipefail

[[ -n ${EPOCHREALTIME:-} ]] || { echo "gpu_check.sh needs bash 5 or later (EPOCHREALTIME)" >&2; exit 2; }
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2

MODE=gpu
ONLY=""
while (($#)); do
    case $1 in
        --dry-run) MODE=dry-run ;;
        --steps) ONLY=${2:-}; shift ;;
        --steps=*) ONLY=${1#--steps=} ;;
        -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

PYTHON=${PYTHON:-python3}
if [[ $MODE == gpu ]]; then BUDGET=${GPU_CHECK_BUDGET_S:-470}; else BUDGET=${GPU_CHECK_BUDGET_S:-600}; fi
MIN_STEP_S=20      # a step with less time left than this is not started
LOG_MAX_BYTES=$((2 << 20))
OUT=${OUT:-$(mktemp -d -t gpu_check-out.XXXXXX)}
mkdir -p "$OUT" || exit 2
if [[ -n ${GPU_CHECK_WORK:-} ]]; then
    WORK=$GPU_CHECK_WORK
    mkdir -p "$WORK" || exit 2
else
    WORK=$(mktemp -d -t gpu_check-work.XXXXXX) || exit 2
    [[ ${GPU_CHECK_KEEP:-0} == 1 ]] || trap 'rm -rf "$WORK"' EXIT
fi
: > "$WORK/steps.tsv"
: > "$WORK/substitutions.tsv"

SHARED=${LENSDB_TEST_SHARED:-}
if [[ -z $SHARED ]]; then
    if [[ -d $REPO/.whl/shared/fixtures ]]; then SHARED=$REPO/.whl/shared; else SHARED=$REPO/../shared; fi
fi
TOKENIZER=$SHARED/fixtures/models/gpt2-tokenizer

export LENSDB_TEST_SHARED=$SHARED          # tests/conftest.py: stories260K
export LENSDB_BENCH_OUT=$WORK/bench-out    # extract_bench.py: built models and work folders
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

START=$(date +%s)
START_REAL=$EPOCHREALTIME
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
DEADLINE=$((START + BUDGET))

say() { echo "[gpu_check.sh $(date +%H:%M:%S)] $*"; }

selected() {  # install and env always run; the others when --steps names them (or no --steps)
    [[ -z $ONLY || $1 == install || $1 == env || ,$ONLY, == *",$1,"* ]]
}

record() {  # record NAME RAN RC SECONDS TIMEOUT LOG COMMAND REASON -> steps.tsv (tabs and newlines flattened)
    local fields=() field
    for field in "$@"; do fields+=("${field//[$'\t\n']/ }"); done
    (IFS=$'\t'; echo "${fields[*]}") >> "$WORK/steps.tsv"
}

substitution() {  # substitution STEP TEXT: what the dry-run runs instead of the real sizes
    printf '%s\t%s\n' "$1" "$2" >> "$WORK/substitutions.tsv"
}

# run_step NAME CAP_S LOG RESULT COMMAND...: RESULT is the file for the command's stdout, or - (stdout
# to the log too). The step gets min(CAP_S, what is left of the budget) seconds.
run_step() {
    local name=$1 cap=$2 log=$3 result=$4
    shift 4
    if ! selected "$name"; then
        record "$name" 0 "" "" "" "" "$*" "not selected"
        return 0
    fi
    local left=$((DEADLINE - $(date +%s)))
    if ((left < MIN_STEP_S)); then
        record "$name" 0 "" "" "" "$log" "$*" "out of time: ${left} s of the ${BUDGET} s budget left"
        say "$name: NOT RUN (out of time: ${left} s left)"
        return 0
    fi
    local limit=$((cap < left ? cap : left)) began=$EPOCHREALTIME rc
    say "$name (at most ${limit} s): $*"
    echo "### $(date -u +%H:%M:%S) $name (timeout ${limit} s): $*" >> "$OUT/$log"
    if [[ $result == - ]]; then
        timeout --kill-after=10 "$limit" "$@" >> "$OUT/$log" 2>&1
    else
        timeout --kill-after=10 "$limit" "$@" > "$result" 2>> "$OUT/$log"
    fi
    rc=$?
    local seconds
    seconds=$(awk -v a="$began" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    echo "### $name: exit status $rc after ${seconds} s" >> "$OUT/$log"
    record "$name" 1 "$rc" "$seconds" "$limit" "$log" "$*" ""
    if ((rc == 124 || rc == 137)); then say "$name: TIMED OUT after ${seconds} s"; else say "$name: exit status $rc, ${seconds} s"; fi
    return 0
}

say "mode $MODE, budget ${BUDGET} s, python $PYTHON, OUT $OUT, work $WORK, shared fixtures $SHARED"

# --------------------------------------------------------------------------- install
shopt -s nullglob
WHEELS=("$REPO"/.whl/*.whl)
shopt -u nullglob
SITE=$WORK/site
if [[ $MODE == gpu ]]; then
    if ((${#WHEELS[@]})); then
        run_step install 120 setup.log - "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --upgrade --target "$SITE" "${WHEELS[@]}"
    else
        run_step install 10 setup.log - sh -c 'echo "no wheels in .whl/: run bash bench/gpu_wheels.sh before the device call, and carry .whl" >&2; exit 1'
    fi
    export PYTHONPATH=$SITE:$PYTHONPATH
else
    if ((${#WHEELS[@]})); then
        substitution install "pip install --dry-run for CPython 3.12 manylinux x86_64 (checks the wheel set; installs nothing)"
        run_step install 120 setup.log - "$PYTHON" -m pip install -q --dry-run --no-index --no-deps --target "$SITE" \
            --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
            --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 --platform any "${WHEELS[@]}"
    else
        substitution install "no .whl/ here (bench/gpu_wheels.sh not run): nothing to install or check"
        run_step install 10 setup.log - true
    fi
fi

# --------------------------------------------------------------------------- env
if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/[nvidia-smi] /'
    nvidia-smi >> "$OUT/setup.log" 2>&1
else
    say "no nvidia-smi on this machine"
fi
run_step env 60 setup.log - "$PYTHON" bench/gpu_check.py env --mode "$MODE" --out "$WORK/env.json"
grep -E '^\[gpu_check\] (GPU|PROBLEM|missing)' "$OUT/setup.log" | sed 's/^/  /'

# --------------------------------------------------------------------------- cuda tests
NGPU=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["cuda_device_count"] or 0)' "$WORK/env.json" 2> /dev/null || echo 0)
MARKER=cuda
if ((NGPU >= 2)); then MARKER="cuda or multi_gpu"; fi
[[ $MODE == dry-run ]] && substitution cuda_tests "no GPU: every cuda test is expected to skip (none may fail)"
run_step cuda_tests 120 cuda_tests.log - "$PYTHON" -m pytest -m "$MARKER" tests/ -q -rs -p no:cacheprovider \
    --junitxml="$WORK/cuda_tests.xml"
if grep -q $'^cuda_tests\t1\t' "$WORK/steps.tsv"; then  # it ran: its counts from the JUnit XML
    "$PYTHON" bench/gpu_check.py junit --xml "$WORK/cuda_tests.xml" --mode "$MODE" --marker "$MARKER" \
        --out "$WORK/cuda_tests.json" >> "$OUT/cuda_tests.log" 2>&1
    tail -n 1 "$OUT/cuda_tests.log" | sed 's/^/  /'
fi

# --------------------------------------------------------------------------- float32 check
if [[ $MODE == gpu ]]; then
    run_step float32_check 150 float32_check.log - "$PYTHON" bench/gpu_check.py float32 --device cuda \
        --models tiny_gpt2,tiny_llama,stories260K,llama8b-scaled --split-model llama8b-scaled \
        --split-dtypes float16,bfloat16 --n-capitals 12 --tokenizer "$TOKENIZER" --shared "$SHARED" \
        --work "$WORK" --out "$WORK/float32_check.json"
else
    note="CPU instead of CUDA; tiny_gpt2 alone (not tiny_llama, stories260K, the 128k-vocabulary llama8b-scaled); split check on tiny_llama float16"
    substitution float32_check "$note"
    run_step float32_check 120 float32_check.log - "$PYTHON" bench/gpu_check.py float32 --device cpu \
        --models tiny_gpt2 --split-model tiny_llama --split-dtypes float16 \
        --tokenizer "$TOKENIZER" --shared "$SHARED" --work "$WORK" --out "$WORK/float32_check.json" --substitution "$note"
fi

# --------------------------------------------------------------------------- lensdb extract, 8B shape, capitals
if [[ $MODE == gpu ]]; then
    run_step extract_capitals 240 extract_capitals.log - "$PYTHON" bench/gpu_check.py extract-capitals --shape llama8b \
        --tokenizer "$TOKENIZER" --prompts capitals --gpu-samples --work "$WORK" --out "$WORK/extract_capitals.json"
else
    "$PYTHON" bench/gpu_check.py prompts --n 8 --out "$WORK/capitals-8.jsonl" >> "$OUT/extract_capitals.log" 2>&1
    note="tests/conftest.py's tiny_llama instead of the 8B shape, over the first 8 capitals prompts, on the CPU (no GPU samples)"
    substitution extract_capitals "$note"
    run_step extract_capitals 120 extract_capitals.log - "$PYTHON" bench/gpu_check.py extract-capitals --model tiny_llama \
        --tokenizer "$TOKENIZER" --prompts "$WORK/capitals-8.jsonl" --work "$WORK" \
        --out "$WORK/extract_capitals.json" --substitution "$note"
fi

# --------------------------------------------------------------------------- extract_bench
if [[ $MODE == gpu ]]; then  # the 8B shape first: it has more targets, and extract_capitals built its model
    run_step bench_llama8b 300 bench_llama8b.log "$WORK/bench_llama8b.json" "$PYTHON" bench/extract_bench.py \
        --shape llama8b --n 256 --skip-seed-style --json --tokenizer "$TOKENIZER"
    run_step bench_gpt2 200 bench_gpt2.log "$WORK/bench_gpt2.json" "$PYTHON" bench/extract_bench.py --shape gpt2 \
        --n 1000 --skip-seed-style --json --tokenizer "$TOKENIZER"
else
    tiny() {  # tests/conftest.py's tiny model (float32_check builds it; --steps may have left that out)
        [[ -f $WORK/models/$1/config.json ]] || "$PYTHON" bench/gpu_check.py tiny-model "$1" --work "$WORK" >> "$OUT/$2" 2>&1
        echo "$WORK/models/$1"
    }
    substitution bench_llama8b "--model tiny_llama (tests/conftest.py) --n 4 --load-repeats 1 --in-process on the CPU"
    run_step bench_llama8b 120 bench_llama8b.log "$WORK/bench_llama8b.json" "$PYTHON" bench/extract_bench.py \
        --model "$(tiny tiny_llama bench_llama8b.log)" --n 4 --load-repeats 1 --skip-seed-style --in-process --json
    substitution bench_gpt2 "--model tiny_gpt2 (tests/conftest.py) --n 4 --skip-load --in-process on the CPU"
    run_step bench_gpt2 120 bench_gpt2.log "$WORK/bench_gpt2.json" "$PYTHON" bench/extract_bench.py \
        --model "$(tiny tiny_gpt2 bench_gpt2.log)" --n 4 --skip-seed-style --skip-load --in-process --json
fi

# --------------------------------------------------------------------------- optional: float32 on the full 8B shape
if [[ $MODE == gpu ]]; then
    run_step float32_8b 150 float32_check.log - "$PYTHON" bench/gpu_check.py float32 --device cuda --models llama8b \
        --split-model "" --n-capitals-8b 2 --tokenizer "$TOKENIZER" --shared "$SHARED" --work "$WORK" \
        --out "$WORK/float32_8b.json"
else
    note="tests/conftest.py's tiny_llama instead of the full 8B shape (its build is float32_check's llama8b-scaled on the GPU), on the CPU"
    substitution float32_8b "$note"
    run_step float32_8b 60 float32_check.log - "$PYTHON" bench/gpu_check.py float32 --device cpu --models tiny_llama \
        --split-model "" --tokenizer "$TOKENIZER" --shared "$SHARED" --work "$WORK" \
        --out "$WORK/float32_8b.json" --substitution "$note"
fi

# --------------------------------------------------------------------------- summary
for log in "$OUT"/*.log; do  # the device returns files of at most 16 MiB: keep each log's end
    size=$(stat -c %s "$log")
    if ((size > LOG_MAX_BYTES)); then
        { echo "[gpu_check.sh: the first $((size - LOG_MAX_BYTES)) bytes of this log were cut]"; tail -c "$LOG_MAX_BYTES" "$log"; } > "$log.cut"
        mv "$log.cut" "$log"
    fi
done
WALL=$(awk -v a="$START_REAL" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
"$PYTHON" bench/gpu_check.py summarize --work "$WORK" --out "$OUT/gpu_check.json" --mode "$MODE" \
    --started-at "$STARTED_AT" --wall-seconds "$WALL" --budget-seconds "$BUDGET"
status=$?
if [[ ! -s $OUT/gpu_check.json ]]; then
    printf '{"issue": 18, "mode": "%s", "ok": false, "problem": "bench/gpu_check.py summarize failed (exit %s)"}\n' \
        "$MODE" "$status" > "$OUT/gpu_check.json"
    status=1
fi
say "wrote $OUT/gpu_check.json ($(ls "$OUT" | wc -l) files in $OUT); exit status $status"
exit "$status"
