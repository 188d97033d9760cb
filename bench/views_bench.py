"""Benchmark the v1 views on a synthetic warehouse of 10 models x 1,000 prompts (5 M records).

The warehouse is written once with lensdb's RunWriter (so the folder layout, the row
groups and the last-position files are what `lensdb extract` writes) into
bench/out/views-warehouse, and reused while its parameters are unchanged:

    models 10, one run each; prompts 1,000 per run (500 ids x variants orig / no_filler,
    the second half controls of the first); lens norm; 24 layers (25 layer rows);
    20 positions per prompt; top-20 ids, tokens and probabilities per record.
    Records: 10 x 1,000 x 25 x 20 = 5,000,000 (of which 250,000 at a last position).

Every record batch is generated with numpy / pyarrow (no Python loop per row). Timings are
warm: each query runs once, then the best of 3 runs is reported. All queries run on one
connection from lensdb.connect(read_only=True) and fetch every row into Arrow, as
`lensdb.query` does; "lensdb.query()" also counts opening the catalog.

Run (it is not a test):

    .venv/bin/python bench/views_bench.py            # a table
    .venv/bin/python bench/views_bench.py --json     # one JSON object
    .venv/bin/python bench/views_bench.py --explain diagnostics   # EXPLAIN ANALYZE of one query
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing lensdb

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

import lensdb  # noqa: E402
from lensdb import catalog  # noqa: E402
from lensdb.warehouse import schema  # noqa: E402
from lensdb.warehouse.writer import RunWriter  # noqa: E402

OUT_DIR = BENCH_DIR / "out"
WAREHOUSE = OUT_DIR / "views-warehouse"
PARAMS = {
    "models": 10,
    "prompts": 1000,
    "n_layers": 24,
    "positions": 20,
    "top_k": 20,
    "d_vocab": 50_000,
    "batch_prompts": 100,
    "seed": 316,
    "format": 1,
}
MARKER = "bench-params.json"

QUERIES = {
    "diagnostics": "SELECT * FROM v1.diagnostics",
    "semantic_collapse": catalog.named_query("semantic_collapse").sql,
    "per_model_layer": (
        "SELECT model, layer, count(*) AS prompts, avg(p_top1) AS mean_p_top1, avg(entropy_bits) AS mean_entropy, "
        "avg(CASE WHEN copy_collapse THEN 1.0 ELSE 0.0 END) AS copy_rate, "
        "avg(CASE WHEN is_answer THEN 1.0 ELSE 0.0 END) AS answer_rate "
        "FROM v1.pure_next_token GROUP BY model, layer ORDER BY model, layer"
    ),
    "records_count": "SELECT count(*) FROM v1.records",
}
GOALS = {"diagnostics": 1.0, "semantic_collapse": 1.0, "per_model_layer": 1.0}


# ------------------------------------------------------------------------------------------
# The synthetic warehouse


def vocabulary(d_vocab: int) -> pa.Array:
    words = np.char.add(" w", np.arange(d_vocab).astype(str)).astype(object)
    for i, blank in enumerate([" ", ",", "\n", ".", "..."]):
        words[7 + 1000 * i] = blank  # a few whitespace / punctuation tokens
    return pa.array(words, pa.string())


def _lists(values: pa.Array, width: int) -> pa.ListArray:
    offsets = pa.array(np.arange(0, len(values) + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def prompt_plan(p: dict, rng: np.random.Generator):
    n = p["prompts"]
    ids = np.arange(n) // 2
    variant = np.where(np.arange(n) % 2 == 0, "orig", "no_filler")
    half = n // 4  # prompt ids >= half are controls of id - half
    token_ids = rng.integers(100, p["d_vocab"], size=(n, p["positions"]), dtype=np.int32)
    token_ids[:, 0] = 1  # BOS
    gold = rng.integers(100, p["d_vocab"], size=ids.max() + 1, dtype=np.int32)
    control = ids >= half
    paired = np.where(control, gold[np.maximum(ids - half, 0)], -1)
    return ids, variant, control, token_ids, gold[ids], paired, half


def prompts_table(p, plan, vocab) -> pa.Table:
    ids, variant, control, token_ids, gold, paired, half = plan
    n = len(ids)
    flat = token_ids.reshape(-1)
    positions = p["positions"]
    return pa.table(
        {
            "prompt_index": pa.array(np.arange(n, dtype=np.int32)),
            "prompt_id": pa.array([f"q{i:04d}" for i in ids]),
            "prompt_variant": pa.array(variant),
            "role": pa.array(np.where(control, "control", "main")),
            "text": pa.array([f"prompt {i}" for i in range(n)]),
            "gold": vocab.take(pa.array(gold)),
            "control_of": pa.array([f"q{i - half:04d}" if c else None for i, c in zip(ids, control)], pa.string()),
            "paired_variant": pa.array(np.where(control, "orig", None).tolist(), pa.string()),
            "temperatures": pa.array([[] for _ in range(n)], pa.list_(pa.float64())),
            "n_tokens": pa.array(np.full(n, positions, dtype=np.int32)),
            "token_ids": _lists(pa.array(flat), positions),
            "tokens": _lists(vocab.take(pa.array(flat)), positions),
            "context_ids": _lists(pa.array(token_ids[:, 1:].reshape(-1)), positions - 1),
            "gold_alignment": pa.array(["ok"] * n),
            "gold_variant": pa.array(["with_space"] * n),
            "gold_first_id": pa.array(gold),
            "gold_answer_ids": _lists(pa.array(gold), 1),
            "gold_pieces": _lists(vocab.take(pa.array(gold)), 1),
            "paired_gold_first_id": pa.array(paired, mask=paired < 0),
        },
        schema=schema.PROMPTS,
    )


def records_batch(p, plan, rows: np.ndarray, vocab, rng) -> pa.RecordBatch:
    """Records of the prompts `rows` (indices into the plan): layer-major, as extract writes a chunk."""
    ids, variant, control, token_ids, gold, paired, _ = plan
    n_layer_rows, positions, k = p["n_layers"] + 1, p["positions"], p["top_k"]
    b = len(rows)
    n = n_layer_rows * b * positions
    prompt_of_row = np.tile(np.repeat(rows, positions), n_layer_rows)
    pos = np.tile(np.tile(np.arange(positions, dtype=np.int32), b), n_layer_rows)
    layer = np.repeat(np.arange(n_layer_rows, dtype=np.int32), b * positions)
    depth = layer / p["n_layers"]
    token = token_ids[prompt_of_row, pos]
    answer = gold[prompt_of_row]

    top = rng.integers(100, p["d_vocab"], size=(n, k), dtype=np.int32)
    draw = rng.random(n)
    copied = token_ids[prompt_of_row, rng.integers(1, positions, n)]
    top[:, 0] = np.where(draw < 0.08, copied, top[:, 0])  # copies of the prompt
    top[:, 0] = np.where((draw > 0.6) & (rng.random(n) < depth), answer, top[:, 0])  # the answer, deeper
    top[:, 0] = np.where(draw > 0.995, 7, top[:, 0])  # a whitespace-only token
    p1 = rng.beta(0.6, 0.6, n).astype(np.float32)
    decay = rng.uniform(0.2, 0.9, size=(n, k - 1)).astype(np.float32)
    probs = np.concatenate([p1[:, None], p1[:, None] * np.cumprod(decay, axis=1)], axis=1).astype(np.float32)
    rank = np.where(top[:, 0] == answer, 1, rng.integers(2, 2000, n)).astype(np.int32)
    p_answer = np.where(rank == 1, p1, probs[:, -1] * rng.random(n).astype(np.float32)).astype(np.float32)
    is_control = control[prompt_of_row]
    paired_rank = rng.integers(1, 2000, n).astype(np.int32)
    p_paired = (rng.random(n) * 0.2).astype(np.float32)
    flat_ids = pa.array(top.reshape(-1))
    columns = {
        "prompt_id": pa.array([f"q{i:04d}" for i in ids]).take(pa.array(prompt_of_row)),
        "prompt_variant": pa.array(variant).take(pa.array(prompt_of_row)),
        "lens": pa.array(["norm"]).take(pa.array(np.zeros(n, dtype=np.int64))),
        "layer": pa.array(layer),
        "pos": pa.array(pos),
        "is_last_pos": pa.array(pos == positions - 1),
        "token_id": pa.array(token),
        "token": vocab.take(pa.array(token)),
        "entropy_bits": pa.array(rng.gamma(2.0, 2.0, n).astype(np.float32)),
        "topk_ids": _lists(flat_ids, k),
        "topk_tokens": _lists(vocab.take(flat_ids), k),
        "topk_probs": _lists(pa.array(probs.reshape(-1)), k),
        "p_answer": pa.array(p_answer),
        "answer_rank": pa.array(rank),
        "p_paired_answer": pa.array(p_paired, mask=~is_control),
        "paired_answer_rank": pa.array(paired_rank, mask=~is_control),
        "kl_to_final_bits": pa.array((1.0 - depth) * 12.0 * rng.random(n)),
        "cos_to_final": pa.array(rng.random(n).astype(np.float32)),
        "kl_vs_norm_bits": pa.nulls(n, pa.float64()),
        "legacy_copy_collapse": pa.nulls(n, pa.bool_()),
    }
    return pa.RecordBatch.from_pydict(columns, schema=schema.RECORDS)


def append_records(writer: RunWriter, batch: pa.RecordBatch) -> None:
    """As lensdb.extract.engine.append_records: last-position rows in a file of their own."""
    last = batch.column("is_last_pos")
    writer.append("records", batch.filter(last), schema.RECORDS, part="next")
    writer.append("records", batch.filter(pc.invert(last)), schema.RECORDS)


def finals_table(p, plan, vocab, rng) -> pa.Table:
    ids, variant, _, _, gold, _, _ = plan
    n, k = len(ids), p["top_k"]
    top = rng.integers(100, p["d_vocab"], size=(n, k), dtype=np.int32)
    top[:, 0] = gold
    probs = np.sort(rng.random((n, k)).astype(np.float32), axis=1)[:, ::-1].copy()
    flat = pa.array(top.reshape(-1))
    return pa.table(
        {
            "prompt_id": pa.array([f"q{i:04d}" for i in ids]),
            "prompt_variant": pa.array(variant),
            "temperature": pa.array(np.ones(n)),
            "entropy_bits": pa.array(rng.random(n).astype(np.float32)),
            "topk_ids": _lists(flat, k),
            "topk_tokens": _lists(vocab.take(flat), k),
            "topk_probs": _lists(pa.array(probs.reshape(-1)), k),
        },
        schema=schema.FINALS,
    )


def manifest_table(p, run_id: str, model: str) -> pa.Table:
    stamp = datetime(2025, 1, 1)
    row = {name: None for name in schema.MANIFEST.names}
    row.update(
        run_id=run_id, model=model, model_revision="synthetic", source="extract", status="committed",
        schema_version=schema.SCHEMA_VERSION, created_at=stamp, finished_at=stamp, lensdb_version=lensdb.__version__,
        architecture="pre_norm", n_layers=p["n_layers"], d_model=64, n_heads=4, d_vocab=p["d_vocab"], n_ctx=128,
        dtype="float32", device="cpu", lenses=["norm"], top_k=p["top_k"], prompt_set="synthetic", seed=p["seed"],
        last_layer_max_kl_bits=0.0, last_layer_top1_agreement=1.0, last_layer_flagged=False,
    )
    return pa.Table.from_pylist([row], schema=schema.MANIFEST)


def build(warehouse: Path, p: dict) -> None:
    if warehouse.exists():
        shutil.rmtree(warehouse)
    warehouse.mkdir(parents=True)
    vocab = vocabulary(p["d_vocab"])
    for m in range(p["models"]):
        started = time.perf_counter()
        rng = np.random.default_rng([p["seed"], m])
        plan = prompt_plan(p, rng)
        run_id, model = f"bench-m{m:02d}", f"bench/model-{m:02d}"
        with RunWriter(warehouse, model, run_id) as writer:
            writer.write("prompts", prompts_table(p, plan, vocab), schema.PROMPTS)
            for start in range(0, p["prompts"], p["batch_prompts"]):
                rows = np.arange(start, min(p["prompts"], start + p["batch_prompts"]))
                append_records(writer, records_batch(p, plan, rows, vocab, rng))
            writer.append("finals", finals_table(p, plan, vocab, rng), schema.FINALS)
            writer.commit(manifest_table(p, run_id, model), schema.MANIFEST)
        print(f"  wrote {model}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    (warehouse / MARKER).write_text(json.dumps(p, sort_keys=True))


def ensure_warehouse(warehouse: Path, p: dict, rebuild: bool) -> bool:
    marker = warehouse / MARKER
    if not rebuild and marker.is_file() and json.loads(marker.read_text()) == p:
        return False
    print(f"building {warehouse} (once; cached) ...", file=sys.stderr)
    build(warehouse, p)
    return True


# ------------------------------------------------------------------------------------------
# Timings


def best_of(fn, repeat: int = 3) -> tuple[float, object]:
    fn()  # warm-up
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def run(warehouse: Path, repeat: int) -> dict:
    con = lensdb.connect(warehouse, read_only=True)
    results = {}
    try:
        for name, sql in QUERIES.items():
            seconds, table = best_of(lambda sql=sql: catalog.run_sql(con, sql, warehouse), repeat)
            results[name] = {"seconds": seconds, "rows": table.num_rows, "sql": " ".join(sql.split())}
        count = con.execute("SELECT count(*) FROM v1.records").fetchone()[0]
    finally:
        con.close()
    seconds, table = best_of(lambda: lensdb.query(QUERIES["diagnostics"], warehouse=warehouse), repeat)
    results["lensdb.query(diagnostics)"] = {"seconds": seconds, "rows": table.num_rows, "sql": "lensdb.query(" + QUERIES["diagnostics"] + ")"}
    for name, result in results.items():
        if name in GOALS:
            result["goal_seconds"] = GOALS[name]
            result["meets_goal"] = result["seconds"] < GOALS[name]
    size = sum(f.stat().st_size for f in (warehouse / "runs").rglob("*.parquet"))
    return {
        "warehouse": str(warehouse),
        "records": count,
        "parquet_bytes": size,
        "params": PARAMS,
        "repeat": repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": _duckdb_version()},
        "queries": results,
    }


def _duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


def explain(warehouse: Path, name: str) -> str:
    con = lensdb.connect(warehouse, read_only=True)
    try:
        catalog.run_sql(con, QUERIES[name], warehouse)  # warm
        return con.execute("EXPLAIN ANALYZE " + QUERIES[name]).fetchall()[0][1]
    finally:
        con.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per query after one warm-up (best is reported)")
    parser.add_argument("--rebuild", action="store_true", help="write the synthetic warehouse again")
    parser.add_argument("--warehouse", type=Path, default=WAREHOUSE)
    parser.add_argument("--explain", choices=sorted(QUERIES), help="print EXPLAIN ANALYZE of one query and exit")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    built = ensure_warehouse(args.warehouse, PARAMS, args.rebuild)
    build_seconds = time.perf_counter() - started
    if args.explain:
        print(explain(args.warehouse, args.explain))
        return 0
    report = run(args.warehouse, args.repeat)
    if built:
        report["build_seconds"] = build_seconds
    if args.json:
        print(json.dumps(report, indent=None))
        return 0
    print(f"warehouse  {report['warehouse']}  ({report['records']:,} records, {report['parquet_bytes'] / 1e6:.0f} MB Parquet)")
    print(f"machine    {report['machine']['cpus']} CPUs, duckdb {report['machine']['duckdb']}; warm, best of {args.repeat}")
    print()
    print(f"{'query':<28} {'seconds':>9} {'rows':>9}  goal")
    for name, result in report["queries"].items():
        goal = ""
        if "goal_seconds" in result:
            goal = f"< {result['goal_seconds']:.0f} s {'ok' if result['meets_goal'] else 'MISSED'}"
        print(f"{name:<28} {result['seconds']:>9.3f} {result['rows']:>9,}  {goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
