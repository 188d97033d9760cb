#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with what bench/gpu_check.sh needs on the GPU machine beyond the
# project's own files: the wheels its image lacks (CPython 3.12, manylinux x86_64, one version
# each, no dependencies resolved: each needed one is named below) and the shared fixtures
# (../shared does not travel). Run it here before the device call; it is idempotent.
#
#   bash bench/gpu_wheels.sh            # PYTHON=... picks the pip to download with (default: .venv's, else python3)
#
# The image (see the device docs' KINDS.md) has torch, transformers, accelerate, psutil, pyarrow,
# click, pyyaml, tqdm, rich, matplotlib, pandas, numpy, pytest, hypothesis, nvidia-ml-py and the rest
# of what lensdb and its tests import, but not:
#   transformer-lens (lensdb's model bridge) and what it imports at start: datasets, dill, multiprocess;
#   its small declared dependencies fancy-einsum, beartype, typeguard (carried, though not imported);
#   duckdb (lensdb.query: the views; the tests read runs through it).
# Not carried, to stay well under the 64 MiB a device call may carry with the working tree:
#   polars (55 MiB; lensdb's polars output only), plotly (10 MiB; lensdb plot/report .html only) and a
#   newer pyarrow (55 MiB; the image's is used: gpu_check.sh's env step reports its version), none of
#   which the check uses; wandb and transformers-stream-generator (declared by transformer-lens, never
#   imported on lensdb's path; the latter has no wheel).
# Versions: those the suite passes with here.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
DEST=.whl
LIMIT_MIB=64  # the device tool's limit for the working tree and the carried folders together

WHEELS=(
    transformer-lens==4.3.0
    datasets==5.1.0
    dill==0.4.1
    multiprocess==0.70.19
    fancy-einsum==0.0.3
    beartype==0.23.1
    typeguard==4.6.1
    duckdb==2.0.1
)
SHARED=${LENSDB_SHARED:-$REPO/../shared}
FIXTURES=(fixtures/models/gpt2-tokenizer fixtures/models/stories260K)

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x $REPO/.venv/bin/python ]]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
PLATFORMS=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
    PLATFORMS+=(--platform "${tag}_x86_64")
done
PLATFORMS+=(--platform any)

mkdir -p "$DEST" || exit 2
grep -qx '/.whl/' .gitignore 2> /dev/null || echo "warning: .whl/ is not in .gitignore: it would travel uncarried and be committed" >&2

status=0
keep=()
for spec in "${WHEELS[@]}"; do
    name=${spec%%==*}
    version=${spec#*==}
    stem=$(echo "$name" | tr 'A-Z-' 'a-z_')  # a wheel's file name: lower case, '-' as '_'
    shopt -s nullglob
    have=("$DEST/$stem-$version-"*.whl)
    shopt -u nullglob
    if ((${#have[@]})); then
        echo "have    ${have[0]#"$DEST"/}"
    elif "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$DEST" "$spec"; then
        shopt -s nullglob
        have=("$DEST/$stem-$version-"*.whl)
        shopt -u nullglob
        if ((${#have[@]})); then echo "fetched ${have[0]#"$DEST"/}"; else echo "ERROR: pip saved no $stem-$version-*.whl" >&2; status=1; fi
    else
        echo "ERROR: pip download $spec failed" >&2
        status=1
    fi
    keep+=("$stem-$version-")
done

# one version of each: two stop the whole install there
shopt -s nullglob
for wheel in "$DEST"/*.whl; do
    base=${wheel#"$DEST"/}
    wanted=0
    for prefix in "${keep[@]}"; do [[ $base == "$prefix"* ]] && wanted=1; done
    if ((!wanted)); then echo "removed $base (not in the list)"; rm -f "$wheel"; fi
done
shopt -u nullglob

for fixture in "${FIXTURES[@]}"; do
    if [[ ! -d $SHARED/$fixture ]]; then
        echo "ERROR: $SHARED/$fixture is missing (LENSDB_SHARED=DIR names the shared folder)" >&2
        status=1
        continue
    fi
    target=$DEST/shared/$fixture
    if diff -rq "$SHARED/$fixture" "$target" > /dev/null 2>&1; then
        echo "have    shared/$fixture"
    else
        rm -rf "$target" && mkdir -p "$(dirname "$target")" && cp -r "$SHARED/$fixture" "$target" && chmod -R u+w "$target" \
            && echo "copied  shared/$fixture" || { echo "ERROR: copying $fixture failed" >&2; status=1; }
    fi
done

# which commit the carried folder was made for (the device's copy of the tree may have no .git)
commit=$(git rev-parse HEAD 2> /dev/null || echo unknown)
changes=$(git status --porcelain --untracked-files=no 2> /dev/null | wc -l)
printf '{"commit": "%s", "uncommitted_changes": %s, "written_at": "%s"}\n' "$commit" \
    "$([[ $changes == 0 ]] && echo false || echo true)" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$DEST/SOURCE.json"

carried_kib=$(du -sk "$DEST" | cut -f1)
tree_kib=$(git ls-files -z --cached --others --exclude-standard 2> /dev/null | du -ck --files0-from=- 2> /dev/null | tail -n 1 | cut -f1)
total_mib=$(((carried_kib + ${tree_kib:-0} + 1023) / 1024))
echo "$DEST/: $(((carried_kib + 1023) / 1024)) MiB ($(ls "$DEST"/*.whl 2> /dev/null | wc -l) wheels + fixtures);" \
    "with the working tree: ${total_mib} MiB of the ${LIMIT_MIB} MiB a device call may carry"
if ((total_mib > LIMIT_MIB)); then echo "ERROR: over the limit" >&2; status=1; fi
if ((status == 0)); then
    echo "ready: device call with carry [\".whl\"] and command: bash bench/gpu_check.sh"
fi
exit "$status"
