"""CPU extraction speed of this checkout against another git revision, measured in one run.

Issue 19's check ("CPU extraction speed stays within 5 %"): both trees extract the same
model and prompts (bench/extract_bench.py's), alternately, each run in a fresh Python
process with that tree first on sys.path; each tree keeps its fastest of --repeats runs.
Time is the run's CPU seconds (user + system, all threads, from the model loaded to the
commit; robust to a shared machine) beside its wall extract_seconds.

    python bench/revision_speed.py --base f8030cf --n 64 --repeats 3

Prints one markdown row and writes the whole result as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

import extract_bench as eb  # noqa: E402

CHILD = """
import json, sys, tempfile, threading, time
import lensdb
from lensdb.extract.engine import extract

samples = [(time.perf_counter(), time.process_time())]
stop = threading.Event()
def sample():
    while not stop.wait(0.02):
        samples.append((time.perf_counter(), time.process_time()))
threading.Thread(target=sample, daemon=True).start()
model, prompts, lenses = sys.argv[1:4]
with tempfile.TemporaryDirectory() as warehouse:
    summary = extract(model, prompts=prompts, warehouse=warehouse, lenses=lenses, device="cpu", dtype="float32")
stop.set()
end = time.process_time()
loaded = summary.timings["loaded_at"]
before = [cpu for t, cpu in samples if t <= loaded] or [samples[0][1]]
print(json.dumps({"extract_seconds": summary.extract_seconds, "cpu_seconds": end - before[-1], "records": summary.rows.get("records"), "lensdb": lensdb.__file__}))
"""


def run_once(tree: Path, model: Path, prompts: Path, lenses: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, str(model), str(prompts), lenses], cwd=tree, env=env,
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["lensdb"]).resolve().is_relative_to(tree.resolve()), f"{tree} ran lensdb from {result['lensdb']}"
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with (e.g. the commit before a refactor)")
    parser.add_argument("--n", type=int, default=64, help="prompts (default 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", choices=tuple(eb.SHAPES), default="gpt2")
    parser.add_argument("--scale-down", action="store_true")
    parser.add_argument("--lenses", default="norm,final_ln,raw")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args(argv)
    model = eb.ensure_model(eb.shape_model_dir(args.shape, args.scale_down), eb.GPT2_TOKENIZER_DIR, args.shape, args.scale_down)
    with tempfile.TemporaryDirectory(prefix="revision-speed-") as work:
        prompts = eb.write_prompts(args.n, Path(work) / "prompts.jsonl")
        base_tree = Path(work) / "base"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base_tree), args.base], check=True)
        try:
            best: dict[str, dict] = {}
            for repeat in range(args.repeats):  # alternated, so that a machine that speeds up or slows down favours neither
                for name, tree in (("base", base_tree), ("head", REPO)):
                    run = run_once(tree, model, prompts, args.lenses)
                    eb.log(f"{name} run {repeat + 1}: {run['extract_seconds']:.2f} s, {run['cpu_seconds']:.2f} CPU s")
                    if name not in best or run["cpu_seconds"] < best[name]["cpu_seconds"]:
                        best[name] = run
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)], check=False)
    result = {"base": args.base, "n": args.n, "shape": args.shape, "scale_down": args.scale_down, "lenses": args.lenses,
              "repeats": args.repeats, **best, "cpu_head_over_base": best["head"]["cpu_seconds"] / best["base"]["cpu_seconds"],
              "wall_head_over_base": best["head"]["extract_seconds"] / best["base"]["extract_seconds"]}
    assert best["head"]["records"] == best["base"]["records"], "the two trees wrote different record counts"
    print("| base | n | base CPU s | head CPU s | head / base (CPU) | head / base (wall) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {args.base} | {args.n} | {best['base']['cpu_seconds']:.2f} | {best['head']['cpu_seconds']:.2f} "
          f"| {result['cpu_head_over_base']:.3f} | {result['wall_head_over_base']:.3f} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
