"""The Python half of bench/gpu_check.sh (issue #18): each step's measurements, and the one
gpu_check.json that summarises them against the issue's targets.

Subcommands (each writes one JSON file with --out; the shell script runs them under `timeout`):

  env               Python, torch, CUDA, the GPU and its driver (nvidia-smi), the versions of
                    lensdb's dependencies, and whether the modules the check needs import.
  junit             The counts of a pytest JUnit XML (the `pytest -m cuda` step), its skips and failures.
  prompts           The first N prompts of `capitals` as lensdb JSONL (the dry-run's subset).
  build-model       extract_bench's random model of a shape (--scale-down: 2 layers), built once.
  tiny-model        tests/conftest.py's tiny_llama or tiny_gpt2, built once (the dry-run's models).
  extract-capitals  `lensdb extract MODEL --prompts ... --json` (3 lenses, defaults otherwise) in a
                    subprocess, while GPU utilisation and memory are sampled every 250 ms
                    (NVML through pynvml, else `nvidia-smi -lms 250`); the busy share and the
                    memory beyond the weights of the extract phase.
  float32           The independent float32 check: lensdb's records of 3 lenses, on --device,
                    against tests/reference.py (plain transformers, one prompt at a time,
                    float64 statistics, on the CPU) at every layer x position; and the split
                    unembedding of a half-precision model against its float32 unembedding
                    on the same device.
  summarize         gpu_check.json: every step's status, its numbers, and the targets.

Run it through bench/gpu_check.sh; `python bench/gpu_check.py SUBCOMMAND --help` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # lensdb and tests/ from the checkout
sys.path.insert(1, str(BENCH_DIR))  # extract_bench, gpu_sampler

from gpu_sampler import GpuSampler  # noqa: E402

LENSES = ("norm", "final_ln", "raw")
PROB_TOL = 1e-5
# lensdb's runtime dependencies and what the carried wheels bring (bench/gpu_wheels.sh)
PACKAGES = (
    "torch", "transformers", "transformer-lens", "accelerate", "psutil", "duckdb", "pyarrow", "polars",
    "click", "pyyaml", "tqdm", "rich", "matplotlib", "plotly", "datasets", "dill", "multiprocess",
    "huggingface-hub", "tokenizers", "safetensors", "numpy", "pandas", "pytest", "hypothesis", "nvidia-ml-py",
)
IMPORTS = ("lensdb.extract.engine", "transformer_lens.model_bridge", "duckdb", "pyarrow", "datasets", "lensdb.catalog")

STEPS = (  # the order gpu_check.sh runs them in
    "install", "env", "cuda_tests", "float32_check", "extract_capitals", "bench_llama8b", "bench_gpt2", "float32_8b",
)
OPTIONAL_STEPS = ("float32_8b",)  # run when time is left; its target is reported, not required

# The targets of issue #18: (step, where in its result, limit, "max" | "min", required, description)
TARGETS = {
    "gpt2_lensdb_over_floor": ("bench_gpt2", ("lensdb_over_floor",), 1.15, "max", True,
                               "pipeline overhead: lensdb (wall - load) / the floor, GPT-2 shape, N = 1,000"),
    "llama8b_lensdb_over_floor": ("bench_llama8b", ("lensdb_over_floor",), 1.15, "max", True,
                                  "pipeline overhead: lensdb (wall - load) / the floor, 8B shape, N = 256"),
    "llama8b_lensdb_over_hardware_limit": ("bench_llama8b", ("lensdb_over_hardware_limit",), 4.0, "max", True,
                                           "lensdb's extract / (one bare half-precision matmul of every unembedding + one pass over the logits), 8B shape"),
    "load_seconds_over_plain": ("bench_llama8b", ("load", "seconds_over_plain"), 1.3, "max", True,
                                "lensdb's load / from_pretrained(..., device_map=cuda), same dtype, 8B shape"),
    "load_peak_host_rss_over_plain": ("bench_llama8b", ("load", "peak_host_rss_over_plain"), 1.2, "max", True,
                                      "peak host RSS of lensdb's load / from_pretrained's, 8B shape"),
    "capitals_extract_seconds": ("extract_capitals", ("extract_seconds",), 15.0, "max", True,
                                 "lensdb extract, 8B shape, whole capitals x 3 lenses, defaults: the summary's extract_seconds"),
    "capitals_gpu_busy_share": ("extract_capitals", ("gpu", "busy_share"), 0.85, "min", True,
                                "mean GPU utilisation (every 250 ms) during the extract phase"),
    "capitals_gpu_mem_beyond_weights_bytes": ("extract_capitals", ("gpu", "mem_beyond_weights_bytes"), None, "max", True,
                                              "GPU memory used (NVML) at its peak in the extract phase minus at its start; limit: lensdb's GPU chunk budget"),
    "float32_records_max_abs_prob_diff": ("float32_check", ("max_abs_prob_diff",), PROB_TOL, "max", True,
                                          "CUDA float32 records (3 lenses, every layer x position) vs the independent one-prompt-at-a-time computation"),
    "split_unembedding_max_abs_prob_diff": ("float32_check", ("split", "max_abs_prob_diff"), PROB_TOL, "max", True,
                                            "split unembedding's probabilities vs a float32 unembedding on the device (3 lenses, 128k vocabulary)"),
    "cuda_tests_failed": ("cuda_tests", ("not_passed",), 0, "max", True, "pytest -m cuda: failed + errors"),
    "cuda_tests_skipped": ("cuda_tests", ("skipped",), 0, "max", True, "pytest -m cuda: skipped (none may skip on a GPU)"),
    "float32_8b_max_abs_prob_diff": ("float32_8b", ("max_abs_prob_diff",), PROB_TOL, "max", False,
                                     "as float32_records_max_abs_prob_diff, on the full 8B shape (a few prompts; when time is left)"),
}


def write_json(path: str | Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def say(message: str) -> None:
    print(f"[gpu_check] {message}", flush=True)


# --------------------------------------------------------------------------- env


def cmd_env(args) -> int:
    from importlib import metadata

    info: dict = {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
                  "cpu_count": os.cpu_count(), "pythonpath": os.environ.get("PYTHONPATH", "")}
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["packages"] = versions
    imports = {}
    for module in IMPORTS:
        try:
            __import__(module)
            imports[module] = "ok"
        except Exception as error:  # noqa: BLE001 - reported, not raised
            imports[module] = f"{type(error).__name__}: {error}"
    info["imports"] = imports
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = torch.cuda.is_available()
        info["cuda_device_count"] = torch.cuda.device_count()
        info["gpus"] = [
            {"name": torch.cuda.get_device_name(i), "memory_bytes": torch.cuda.get_device_properties(i).total_memory,
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
            for i in range(torch.cuda.device_count())
        ]
    except Exception as error:  # noqa: BLE001
        info.update(torch=None, cuda_available=False, cuda_device_count=0, gpus=[], torch_error=repr(error))
    info["nvidia_smi"] = _nvidia_smi_facts()
    info["gpu_name"] = (info["gpus"][0]["name"] if info["gpus"] else None) or (info["nvidia_smi"] or {}).get("name")
    info["driver"] = (info["nvidia_smi"] or {}).get("driver_version")
    info["source"] = source_revision()
    problems = [f"{m}: {v}" for m, v in imports.items() if v != "ok"]
    if args.mode == "gpu" and not info["cuda_available"]:
        problems.append("torch sees no CUDA device")
    info["problems"] = problems
    info["ok"] = not problems
    write_json(args.out, info)
    say(f"GPU {info['gpu_name'] or 'none'}, driver {info['driver'] or 'n/a'}, torch {info['torch']} "
        f"(CUDA {info.get('torch_cuda')}), {info['cuda_device_count']} CUDA device(s), Python {info['python']}")
    say("packages: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    say("missing: " + (", ".join(k for k, v in versions.items() if not v) or "none"))
    for problem in problems:
        say(f"PROBLEM {problem}")
    return 0 if info["ok"] else 1


def _nvidia_smi_facts() -> dict | None:
    if shutil.which("nvidia-smi") is None:
        return None
    fields = ("name", "driver_version", "memory.total", "memory.used", "utilization.gpu", "pstate")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError) as error:
        return {"error": repr(error)}
    if not out:
        return {"error": "nvidia-smi printed nothing"}
    facts = dict(zip(fields, (part.strip() for part in out[0].split(","))))
    facts["gpus"] = len(out)
    return facts


def source_revision() -> dict:
    """The commit measured: git where the checkout has it, else what gpu_wheels.sh recorded."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            return {"commit": commit.stdout.strip(), "uncommitted_changes": bool(dirty), "from": "git"}
    except (OSError, subprocess.SubprocessError):
        pass
    recorded = read_json(REPO / ".whl" / "SOURCE.json")
    return {**recorded, "from": ".whl/SOURCE.json (written by gpu_wheels.sh)"} if recorded else {"commit": None, "from": None}


# --------------------------------------------------------------------------- junit


def cmd_junit(args) -> int:
    import xml.etree.ElementTree as ET

    result = {"xml": str(args.xml), "mode": args.mode, "marker": args.marker}
    try:
        root = ET.parse(args.xml).getroot()
    except (OSError, ET.ParseError) as error:
        result.update(ok=False, problem=f"no JUnit XML: {error}")
        write_json(args.out, result)
        return 1
    cases = list(root.iter("testcase"))
    passed, failed, errors, skipped = [], [], [], []
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            failed.append(name)
        elif case.find("error") is not None:
            errors.append(name)
        elif (skip := case.find("skipped")) is not None:
            skipped.append({"test": name, "reason": skip.get("message", "")})
        else:
            passed.append(name)
    result.update(tests=len(cases), passed=len(passed), failed=len(failed), errors=len(errors), skipped=len(skipped),
                  not_passed=len(failed) + len(errors), failures=failed + errors, skips=skipped, passed_tests=passed)
    if args.mode == "gpu":  # every CUDA test runs and passes
        result["ok"] = bool(cases) and not failed and not errors and not skipped
        result["expectation"] = "every test runs and passes: none may skip"
    else:  # no GPU here: every CUDA test is expected to skip, none to fail
        result["ok"] = bool(cases) and not failed and not errors
        result["expectation"] = "dry-run: the CUDA tests skip without a GPU; none may fail"
    write_json(args.out, result)
    say(f"{args.marker} tests: {len(cases)} collected, {len(passed)} passed, {len(failed)} failed, "
        f"{len(errors)} errors, {len(skipped)} skipped -> {'ok' if result['ok'] else 'NOT ok'} ({result['expectation']})")
    return 0 if result["ok"] else 1


# --------------------------------------------------------------------------- prompts and models


def cmd_prompts(args) -> int:
    import extract_bench

    extract_bench.write_prompts(args.n, Path(args.out))
    return 0


def build_model(shape: str, scale_down: bool, tokenizer: str) -> Path:
    import extract_bench

    return extract_bench.ensure_model(extract_bench.shape_model_dir(shape, scale_down), Path(tokenizer), shape, scale_down)


def cmd_build_model(args) -> int:
    start = time.perf_counter()
    path = build_model(args.shape, args.scale_down, args.tokenizer)
    say(f"model {path} ready in {time.perf_counter() - start:.1f} s")
    return 0


def weights_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


# --------------------------------------------------------------------------- extract-capitals


def cmd_extract_capitals(args) -> int:
    result: dict = {"prompts": args.prompts, "lenses": list(LENSES), "shape": args.shape + ("-scaled-down" if args.scale_down else ""),
                    "substitution": args.substitution}
    start = time.perf_counter()
    if args.model:  # the dry-run's tiny model instead of the shape
        model_dir = tiny_model(args.model, Path(args.work)) if args.model in TINY_MODELS else Path(args.model)
        result["shape"] = None
    else:
        model_dir = build_model(args.shape, args.scale_down, args.tokenizer)
    result.update(model=str(model_dir), build_seconds=time.perf_counter() - start, weights_bytes=weights_bytes(model_dir))
    command = [sys.executable, "-m", "lensdb", "extract", str(model_dir), "--prompts", args.prompts,
               "--warehouse", str(Path(args.work) / "warehouse-capitals"), "--lens", ",".join(LENSES), "--json"]
    result["command"] = " ".join(["lensdb"] + command[3:])
    say("running " + result["command"])
    sampler = GpuSampler(0) if args.gpu_samples else None
    with sampler or contextlib.nullcontext():
        origin = time.perf_counter()
        printed_at = None
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=str(REPO))
        from lensdb.extract.engine import CHUNK_BYTES  # imports torch: while the extract loads, not before it

        lines = []
        for line in process.stdout:  # the summary is printed as extract returns
            printed_at = printed_at or time.perf_counter()
            lines.append(line)
        rc = process.wait()
        ended = time.perf_counter()
    result.update(rc=rc, process_seconds=ended - origin)
    try:
        summary = json.loads("".join(lines))
    except ValueError:
        summary = None
        result["stdout"] = "".join(lines)[-4000:]
    result["summary"] = summary
    if summary:
        extract_seconds = summary["extract_seconds"]
        result.update(
            extract_seconds=extract_seconds, load_seconds=summary.get("load_seconds"), dtype=summary.get("dtype"),
            device=summary.get("device"), unembed_precision=summary.get("unembed_precision"), n_prompts=summary.get("n_prompts"),
            records=(summary.get("rows") or {}).get("records"), records_per_second=(summary.get("rows") or {}).get("records", 0) / extract_seconds,
            load_peak_host_rss_bytes=summary.get("load_peak_host_rss_bytes"), peak_host_rss_bytes=summary.get("peak_host_rss_bytes"),
        )
        chunk_budget = CHUNK_BYTES["cpu" if summary.get("device") == "cpu" else "gpu"]
        # the extract phase: from load's end (extract_seconds before the summary came) to the summary
        gpu = (sampler or GpuSampler(0)).window(printed_at - extract_seconds, printed_at)  # all None without samples
        gpu["series"] = sampler.series(origin) if sampler else []  # [s since the command started, util %, MiB used]
        gpu["extract_window_s"] = [round(printed_at - extract_seconds - origin, 3), round(printed_at - origin, 3)]
        gpu["chunk_budget_bytes"] = chunk_budget
        result["gpu"] = gpu
        result["chunk_budget_bytes"] = chunk_budget
        busy = gpu.get("busy_share")
        beyond = gpu.get("mem_beyond_weights_bytes")
        say(f"extract {extract_seconds:.2f} s, load {summary.get('load_seconds', 0):.2f} s, {result['records']} records, "
            f"dtype {result['dtype']}, unembedding {result['unembed_precision']}; GPU busy "
            f"{'n/a' if busy is None else f'{busy:.0%}'} ({gpu.get('samples', 0)} samples, {gpu.get('source')}); "
            f"GPU memory beyond weights {'n/a' if beyond is None else f'{beyond / 2**20:.0f} MiB'} (chunk budget {chunk_budget >> 20} MiB)")
    result["ok"] = rc == 0 and summary is not None
    write_json(args.out, result)
    return 0 if result["ok"] else 1


# --------------------------------------------------------------------------- float32


def _tiny_prompts(model: str):
    from tests.conftest import TINY_PROMPTS
    from tests.test_extract_correctness import STORY_PROMPTS

    return STORY_PROMPTS if model == "stories260K" else TINY_PROMPTS


TINY_MODELS = ("tiny_gpt2", "tiny_llama")  # tests/conftest.py's random models, with tokenizers trained there


def tiny_model(name: str, work: Path) -> Path:
    """tests/conftest.py's tiny model `name`, built once under work/models/."""
    from tests.conftest import build_tiny_gpt2, build_tiny_llama

    model_dir = work / "models" / name
    if not (model_dir / "config.json").is_file():
        staging = model_dir.with_name(name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (build_tiny_gpt2 if name == "tiny_gpt2" else build_tiny_llama)(staging)
        staging.rename(model_dir)
    return model_dir


def cmd_tiny_model(args) -> int:
    print(tiny_model(args.name, Path(args.work)))
    return 0


def prepare_model(name: str, args) -> tuple[Path, Path, str]:
    """(model dir, prompts file, what they are) for a model name of the float32 check."""
    from tests.conftest import write_jsonl

    work = Path(args.work)
    if name in TINY_MODELS:
        return tiny_model(name, work), write_jsonl(work / f"{name}.jsonl", _tiny_prompts(name)), "tests.conftest.TINY_PROMPTS"
    if name == "stories260K":
        model_dir = Path(args.shared) / "fixtures" / "models" / "stories260K"
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{model_dir} is missing (bench/gpu_wheels.sh copies it into .whl/shared)")
        return model_dir, write_jsonl(work / f"{name}.jsonl", _tiny_prompts(name)), "tests.test_extract_correctness.STORY_PROMPTS"
    if name in ("llama8b-scaled", "llama8b"):
        import extract_bench

        model_dir = build_model("llama8b", name == "llama8b-scaled", args.tokenizer)
        n = args.n_capitals if name == "llama8b-scaled" else args.n_capitals_8b
        return model_dir, extract_bench.write_prompts(n, work / f"{name}.jsonl"), f"the first {n} capitals prompts"
    raise ValueError(f"unknown model {name!r}")


def check_float32_records(model_dir: Path, prompts_file: Path, args, warehouse: Path) -> dict:
    """lensdb's float32 records of every lens x layer x position vs tests/reference.py."""
    import numpy as np
    import pyarrow.dataset as ds

    from lensdb.extract.engine import extract
    from tests.reference import load_hf, reference_lens

    start = time.perf_counter()
    summary = extract(str(model_dir), prompts=str(prompts_file), warehouse=warehouse, lenses=LENSES, device=args.device,
                      dtype="float32", batch_size=args.batch_size)
    extract_seconds = time.perf_counter() - start
    _free_device_memory()
    read = lambda table: ds.dataset(summary.path / table, format="parquet").to_table()  # noqa: E731
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read("prompts").to_pylist()}
    n_layers = read("manifest").to_pylist()[0]["n_layers"]
    columns = ["prompt_id", "prompt_variant", "lens", "layer", "pos", "topk_ids", "topk_probs", "entropy_bits", "kl_to_final_bits"]
    records = read("records").select(columns).to_pylist()
    expected = {(pid, var, lens, layer, pos) for (pid, var), p in prompts.items() for lens in LENSES
                for layer in range(n_layers + 1) for pos in range(p["n_tokens"])}
    keys = [(r["prompt_id"], r["prompt_variant"], r["lens"], r["layer"], r["pos"]) for r in records]
    by_prompt: dict = {}
    for r in records:
        by_prompt.setdefault((r["prompt_id"], r["prompt_variant"]), []).append(r)
    worst = {lens: 0.0 for lens in LENSES}
    worst_entropy = worst_kl = 0.0
    for key, rows in by_prompt.items():  # one prompt's reference at a time: its float64 arrays are large for a 128k vocabulary
        ref = reference_lens(str(model_dir), prompts[key]["token_ids"])
        k = max(len(r["topk_ids"]) for r in rows)
        per_lens = {lens: _reference_statistics(ref.probs[lens], ref.final_probs, k) for lens in LENSES}
        for r in rows:
            p = ref.probs[r["lens"]][r["layer"], r["pos"]]
            top, entropy, kl = (a[r["layer"], r["pos"]] for a in per_lens[r["lens"]])
            ours = np.asarray(r["topk_probs"])
            diff = max(np.abs(ours - p[r["topk_ids"]]).max(), np.abs(ours - top[: len(ours)]).max())
            worst[r["lens"]] = max(worst[r["lens"]], float(diff))
            worst_entropy = max(worst_entropy, abs(r["entropy_bits"] - entropy))
            worst_kl = max(worst_kl, abs(r["kl_to_final_bits"] - max(0.0, kl)))
        del ref, per_lens
    load_hf.cache_clear()
    max_diff = max(worst.values()) if records else None
    complete = len(keys) == len(set(keys)) and set(keys) == expected
    return {
        "model": str(model_dir), "device": summary.device, "dtype": summary.dtype, "unembed_precision": summary.unembed_precision,
        "n_prompts": len(prompts), "n_layers": n_layers, "records": len(records), "records_expected": len(expected),
        "complete": complete, "max_abs_prob_diff": max_diff, "max_abs_prob_diff_by_lens": worst,
        "max_abs_entropy_diff_bits": worst_entropy, "max_abs_kl_to_final_diff_bits": worst_kl,
        "extract_seconds": extract_seconds, "check_seconds": time.perf_counter() - start - extract_seconds,
        "ok": complete and max_diff is not None and max_diff <= PROB_TOL,
    }


def _reference_statistics(probs, final_probs, k: int):
    """Per (layer, position) of one lens: the k largest reference probabilities (descending),
    the entropy and the KL to the final distribution in bits, as tests/reference.py defines
    them (entropy_bits, kl_bits), over the whole (layers, positions, vocabulary) array at once."""
    import numpy as np

    top = -np.partition(-probs, k - 1, axis=-1)[..., :k]
    top = -np.sort(-top, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        positive = probs > 0
        logp = np.where(positive, np.log(np.where(positive, probs, 1.0)), 0.0)
        entropy = -(probs * logp).sum(axis=-1) / math.log(2)
        kl = np.where(positive, probs * (logp - np.log(final_probs)[None]), 0.0).sum(axis=-1) / math.log(2)
    return top, entropy, kl


def check_split(model_dir: Path, prompts_file: Path, args, dtype: str, warehouse: Path) -> dict:
    """`--unembed split` vs `--unembed float32` on the same half-precision model and device."""
    import numpy as np
    import pyarrow.dataset as ds

    from lensdb.extract.engine import extract

    tables, precision = {}, {}
    for strategy in ("float32", "split"):
        summary = extract(str(model_dir), prompts=str(prompts_file), warehouse=warehouse / f"{dtype}-{strategy}", lenses=LENSES,
                          device=args.device, dtype=dtype, unembed=strategy, batch_size=args.batch_size)
        _free_device_memory()
        precision[strategy] = summary.unembed_precision
        sort_keys = [(c, "ascending") for c in ("prompt_id", "prompt_variant", "lens", "layer", "pos")]
        tables[strategy] = ds.dataset(summary.path / "records", format="parquet").to_table().sort_by(sort_keys)
    full, split = tables["float32"], tables["split"]
    p_full = np.array(full.column("topk_probs").to_pylist())
    p_split = np.array(split.column("topk_probs").to_pylist())
    same_rows = full.num_rows == split.num_rows > 0
    diff = float(np.abs(np.sort(p_full, axis=1) - np.sort(p_split, axis=1)).max()) if same_rows else None
    by_lens = {}
    if same_rows:
        lenses = np.array(full.column("lens").to_pylist())
        for lens in LENSES:
            rows = lenses == lens
            by_lens[lens] = float(np.abs(np.sort(p_full[rows], axis=1) - np.sort(p_split[rows], axis=1)).max()) if rows.any() else None
    top1 = float((np.array([r[0] for r in full.column("topk_ids").to_pylist()]) == np.array([r[0] for r in split.column("topk_ids").to_pylist()])).mean()) if same_rows else None
    return {"dtype": dtype, "records": full.num_rows, "unembed_precision": precision, "max_abs_prob_diff": diff,
            "max_abs_prob_diff_by_lens": by_lens, "top1_agreement": top1,
            "ok": diff is not None and diff <= PROB_TOL and precision["split"].startswith(dtype)}


def _free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cmd_float32(args) -> int:
    import torch

    result: dict = {"device": args.device, "lenses": list(LENSES), "tolerance": PROB_TOL, "models": {}, "split": None,
                    "substitution": args.substitution, "reference": "tests/reference.py (transformers, one prompt at a time, float32 forward on the CPU, float64 statistics)"}
    if args.device == "cuda" and not torch.cuda.is_available():
        result.update(ok=False, problem="--device cuda: no CUDA device")
        write_json(args.out, result)
        return 1
    work = Path(args.work)
    for name in [m for m in args.models.split(",") if m]:
        say(f"float32 check: {name} on {args.device} ...")
        try:
            model_dir, prompts_file, prompt_source = prepare_model(name, args)
            checked = check_float32_records(model_dir, prompts_file, args, work / f"warehouse-float32-{name}")
            checked["prompts"] = prompt_source
        except Exception as error:  # noqa: BLE001 - recorded; the other models still run
            checked = {"ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
        result["models"][name] = checked
        say(f"  {name}: {checked.get('records')} records, complete {checked.get('complete')}, "
            f"max |p - p_ref| {checked.get('max_abs_prob_diff')}" + (f" ERROR {checked['error']}" if "error" in checked else ""))
    diffs = [m.get("max_abs_prob_diff") for m in result["models"].values()]
    result["max_abs_prob_diff"] = max(diffs) if diffs and None not in diffs else None
    if args.split_model:
        split: dict = {"model": args.split_model, "dtypes": {}}
        try:
            model_dir, prompts_file, prompt_source = prepare_model(args.split_model, args)
            split["prompts"] = prompt_source
            for dtype in args.split_dtypes.split(","):
                say(f"split vs float32 unembedding: {args.split_model} in {dtype} on {args.device} ...")
                split["dtypes"][dtype] = check_split(model_dir, prompts_file, args, dtype, work / f"warehouse-split-{args.split_model}")
                say(f"  {dtype}: max |p_split - p_float32| {split['dtypes'][dtype]['max_abs_prob_diff']}, "
                    f"top-1 agreement {split['dtypes'][dtype]['top1_agreement']}")
        except Exception as error:  # noqa: BLE001
            split["error"] = f"{type(error).__name__}: {error}"
            split["traceback"] = traceback.format_exc()[-3000:]
            say(f"  ERROR {split['error']}")
        values = [d.get("max_abs_prob_diff") for d in split["dtypes"].values()]
        split["max_abs_prob_diff"] = max(values) if values and None not in values and "error" not in split else None
        split["ok"] = "error" not in split and bool(values) and all(d["ok"] for d in split["dtypes"].values())
        result["split"] = split
    result["ok"] = bool(result["models"]) and all(m["ok"] for m in result["models"].values()) and (result["split"] is None or result["split"]["ok"])
    write_json(args.out, result)
    return 0 if result["ok"] else 1


# --------------------------------------------------------------------------- summarize


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []


def read_steps(path: Path) -> dict:
    """gpu_check.sh's steps.tsv: name, ran (1/0), rc, seconds, timeout_s, log, command, reason."""
    runs = {}
    for line in _lines(path):
        name, ran, rc, seconds, timeout_s, log, command, reason = (line.split("\t") + [""] * 8)[:8]
        runs[name] = {"name": name, "ran": ran == "1", "rc": int(rc) if rc else None, "seconds": float(seconds) if seconds else None,
                      "timeout_s": int(timeout_s) if timeout_s else None, "log": log or None, "command": command or None,
                      "reason": reason or None}
    return runs


def _dig(data, path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


BENCH_FIELDS = (  # copied from extract_bench's JSON into the step's entry (the whole JSON is kept too)
    "n_prompts", "shape", "dtype", "lenses", "batch_size", "lensdb_over_floor", "lensdb_over_blocked_floor",
    "lensdb_over_hardware_limit", "tokens_per_second", "records_per_second", "records_match", "gpu_busy",
    "peak_mem_beyond_weights_bytes", "parquet_over_csv",
)


def cmd_summarize(args) -> int:
    work = Path(args.work)
    runs = read_steps(work / "steps.tsv")
    substitutions = dict(line.split("\t", 1) for line in _lines(work / "substitutions.tsv"))
    steps = {}
    for name in STEPS:
        run = runs.get(name)
        step = {"status": "not_run", "optional": name in OPTIONAL_STEPS, "substitution": substitutions.get(name)}
        if run is None:
            step["reason"] = "not selected"
            steps[name] = step
            continue
        step.update({k: v for k, v in run.items() if k not in ("name", "ran")})
        if not run["ran"]:
            steps[name] = step
            continue
        result = read_json(work / f"{name}.json")
        if name == "install":  # no result file: its exit status, and what it installed
            result = {"wheels": sorted(p.name for p in (REPO / ".whl").glob("*.whl")), "target": str(work / "site")}
        if name.startswith("bench_") and isinstance(result, dict):
            step.update({k: result.get(k) for k in BENCH_FIELDS})
            load = result.get("load") or {}
            step["load"] = {k: load.get(k) for k in ("seconds_over_plain", "cpu_seconds_over_plain", "peak_host_rss_over_plain", "repeats")}
            step["load"].update({f"{side}_seconds": (load.get(side) or {}).get("seconds") for side in ("plain", "lensdb")})
            step["load"].update({f"{side}_peak_host_rss_bytes": (load.get(side) or {}).get("peak_host_rss_bytes") for side in ("plain", "lensdb")})
            step["hardware_limit"] = result.get("hardware_limit")
            step["bench_targets"] = result.get("targets")
            step["result"] = result
        elif isinstance(result, dict):
            step.update({k: v for k, v in result.items() if not (k == "substitution" and v is None)})
        if run["rc"] in (124, 137):
            step["status"] = "timeout"
        elif run["rc"] != 0 or result is None or (isinstance(result, dict) and result.get("ok") is False):
            step["status"] = "fail"
            if result is None:
                step["problem"] = f"no result file {name}.json"
        else:
            step["status"] = "pass"
        steps[name] = step
    targets = {}
    judged = args.mode == "gpu"
    for name, (step_name, path, limit, kind, required, description) in TARGETS.items():
        step = steps[step_name]
        value = _dig(step, path) if step["status"] in ("pass", "fail") else None
        if limit is None:  # the memory target's limit comes with the step (lensdb's chunk budget)
            limit = step.get("chunk_budget_bytes")
        met = None if value is None or limit is None else (value <= limit if kind == "max" else value >= limit)
        targets[name] = {"value": value, "limit": limit, "kind": kind, "met": met, "step": step_name,
                         "required": required, "description": description}
    # a target of a step left out by --steps is not measured, and not failed; any other required one must be met
    failed_targets = [n for n, t in targets.items()
                      if judged and t["required"] and t["met"] is not True and steps[t["step"]].get("reason") != "not selected"]
    failed_steps = [n for n, s in steps.items() if s["status"] not in ("pass",) and not (s["optional"] and s["status"] == "not_run")
                    and s.get("reason") != "not selected"]
    summary = {
        "issue": 18,
        "mode": args.mode,
        "targets_judged": judged,
        "note": None if judged else "dry-run on the CPU with tiny sizes: the plumbing of every step; its numbers say nothing about a GPU and no target is judged",
        "started_at": args.started_at,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": args.wall_seconds,
        "budget_seconds": args.budget_seconds,
        "source": source_revision(),
        "machine": {k: (steps.get("env") or {}).get(k) for k in ("gpu_name", "driver", "torch", "torch_cuda", "cuda_device_count", "python")},
        "steps": steps,
        "targets": targets,
        "failed_steps": failed_steps,
        "failed_targets": failed_targets,
        "ok": not failed_steps and not failed_targets,
    }
    write_json(args.out, summary)
    print(f"\ngpu_check ({args.mode}) in {args.wall_seconds:.0f} s of a {args.budget_seconds} s budget", flush=True)
    for name, step in steps.items():
        print(f"  {name:<18}{step['status']:<9}{'' if step.get('seconds') is None else format(step['seconds'], '.0f') + ' s'}", flush=True)
    print("targets" + ("" if judged else " (dry-run: not judged)") + ":", flush=True)
    for name, target in targets.items():
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        value = target["value"]
        shown = "-" if value is None else (f"{value:.3g}" if isinstance(value, float) else str(value))
        op = "<=" if target["kind"] == "max" else ">="
        print(f"  {name:<40}{shown:>12} {op} {target['limit']}  {verdict}{'' if target['required'] else ' (optional)'}", flush=True)
    print(f"{'OK' if summary['ok'] else 'FAILED'}: failed steps {failed_steps or 'none'}, failed targets {failed_targets or 'none'}", flush=True)
    return 0 if summary["ok"] else 1


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=("gpu", "dry-run"), default="gpu")

    p = sub.add_parser("junit")
    p.add_argument("--xml", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=("gpu", "dry-run"), default="gpu")
    p.add_argument("--marker", default="cuda")

    p = sub.add_parser("prompts")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)

    for name in ("build-model", "extract-capitals"):
        p = sub.add_parser(name)
        p.add_argument("--shape", choices=("gpt2", "llama8b"), default="llama8b")
        p.add_argument("--scale-down", action="store_true")
        p.add_argument("--tokenizer", required=True)
        if name == "extract-capitals":
            p.add_argument("--out", required=True)
            p.add_argument("--work", required=True)
            p.add_argument("--prompts", default="capitals")
            p.add_argument("--gpu-samples", action="store_true", help="sample the GPU (NVML / nvidia-smi)")
            p.add_argument("--model", help="tiny_llama, tiny_gpt2 or a model folder instead of --shape (the dry-run)")
            p.add_argument("--substitution", help="what the dry-run uses instead of the real sizes")

    p = sub.add_parser("tiny-model", help="build tests/conftest.py's tiny model under WORK/models/ and print its folder")
    p.add_argument("name", choices=TINY_MODELS)
    p.add_argument("--work", required=True)

    p = sub.add_parser("float32")
    p.add_argument("--out", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="tiny_gpt2,tiny_llama,stories260K,llama8b-scaled")
    p.add_argument("--split-model", default="llama8b-scaled", help="the half-precision model of the split check ('' for none)")
    p.add_argument("--split-dtypes", default="float16,bfloat16")
    p.add_argument("--n-capitals", type=int, default=12, help="capitals prompts for llama8b-scaled")
    p.add_argument("--n-capitals-8b", type=int, default=2, help="capitals prompts for the full llama8b")
    p.add_argument("--batch-size", type=int, default=4, help="small, so batches mix prompt lengths (as the tests do)")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--shared", required=True, help="the shared fixtures folder (stories260K)")
    p.add_argument("--substitution")

    p = sub.add_parser("summarize")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=("gpu", "dry-run"), default="gpu")
    p.add_argument("--started-at")
    p.add_argument("--wall-seconds", type=float, default=0.0)
    p.add_argument("--budget-seconds", type=int, default=0)

    args = parser.parse_args(argv)
    handler = {"env": cmd_env, "junit": cmd_junit, "prompts": cmd_prompts, "build-model": cmd_build_model,
               "extract-capitals": cmd_extract_capitals, "float32": cmd_float32, "tiny-model": cmd_tiny_model, "summarize": cmd_summarize}[args.command]
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
