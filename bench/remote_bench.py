"""Queries over an object-store warehouse: requests and time against a local folder.

Starts an S3 API server on localhost (moto's server mode), writes
the same synthetic runs (bench/views_bench.py's generator, smaller) with lensdb's writers into
s3://bench/wh and into a local folder, then runs each query on both and reports, per query:
seconds (best of 3, warm, on one lensdb.connect connection) next to the local folder's, and
`lensdb.query` in a new process: its seconds, the S3 requests it made (LIST, HEAD, GET,
counted in s3fs) and how many runs' data files it read. The results
of both warehouses are compared (they must be equal).

    .venv/bin/python bench/remote_bench.py            # a table
    .venv/bin/python bench/remote_bench.py --json     # one JSON object

It needs the test extra (moto[server], s3fs). It is not a test: loopback requests are far
faster than a real store's, so the request counts are the number to carry over.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import numpy as np  # noqa: E402

import views_bench as synthetic  # noqa: E402

PARAMS = dict(synthetic.PARAMS, models=6, prompts=200, n_layers=12, positions=10, d_vocab=5_000, batch_prompts=100)
BUCKET = "bench"
QUERIES = {
    "count, every run": "SELECT count(*) AS n FROM v1.records",
    "count, one model": "SELECT count(*) AS n FROM v1.records WHERE model = 'bench/model-03'",
    "count, one run": "SELECT count(*) AS n FROM v1.records WHERE run_id = 'bench-m04'",
    "diagnostics, one model": "SELECT * FROM v1.diagnostics WHERE model = 'bench/model-03' ORDER BY ALL",
    "diagnostics, every run": "SELECT * FROM v1.diagnostics ORDER BY ALL",
}
# A new process runs the query with s3fs's requests counted (every S3 call goes through _call_s3).
COLD_QUERY = """
import json, os, re, sys, time
import s3fs
import lensdb
calls = []
real = s3fs.S3FileSystem._call_s3
async def counted(self, method, *args, **kwargs):
    calls.append((method, kwargs.get("Key") or ""))
    return await real(self, method, *args, **kwargs)
s3fs.S3FileSystem._call_s3 = counted
started = time.perf_counter()
lensdb.query(sys.argv[2], sys.argv[1])
seconds = time.perf_counter() - started
kinds = {"list": 0, "head": 0, "get": 0}
runs = set()
for method, key in calls:
    kind = {"list_objects_v2": "list", "head_object": "head", "get_object": "get"}.get(method)
    if kind:
        kinds[kind] += 1
    found = re.search(r"runs/(model=[^/]+/run=[^/]+)/(\\w+)/", key)
    if kind == "get" and found and found.group(2) != "manifest":
        runs.add(found.group(1))
if os.environ.get("BENCH_DEBUG"):
    print(calls, file=sys.stderr)
print(json.dumps({"cold_process_seconds": seconds, "requests": len(calls), **kinds, "runs_read": len(runs)}))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build(warehouse, p: dict) -> None:
    from lensdb.warehouse import schema
    from lensdb.warehouse.layout import open_warehouse

    vocab = synthetic.vocabulary(p["d_vocab"])
    for m in range(p["models"]):
        rng = np.random.default_rng([p["seed"], m])
        plan = synthetic.prompt_plan(p, rng)
        run_id, model = f"bench-m{m:02d}", f"bench/model-{m:02d}"
        with open_warehouse(warehouse).writer(model, run_id) as writer:
            writer.write("prompts", synthetic.prompts_table(p, plan, vocab), schema.PROMPTS)
            for start in range(0, p["prompts"], p["batch_prompts"]):
                rows = np.arange(start, min(p["prompts"], start + p["batch_prompts"]))
                synthetic.append_records(writer, synthetic.records_batch(p, plan, rows, vocab, rng))
            writer.append("finals", synthetic.finals_table(p, plan, vocab, rng), schema.FINALS)
            writer.commit(synthetic.manifest_table(p, run_id, model), schema.MANIFEST)


def best_of(fn, repeat: int = 3):
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def run(repeat: int) -> dict:
    import lensdb
    from lensdb import catalog
    from lensdb.warehouse import layout

    scratch = Path(tempfile.mkdtemp(prefix="lensdb-remote-bench-"))
    port = _free_port()
    env = {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "LENSDB_CACHE_DIR": str(scratch / "cache"),
    }
    os.environ.update(env)
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        import s3fs

        s3fs.S3FileSystem(skip_instance_cache=True).mkdir(BUCKET)
        url, local = f"s3://{BUCKET}/wh", scratch / "wh"
        started = time.perf_counter()
        build(layout.resolve_warehouse(url), PARAMS)
        write_remote = time.perf_counter() - started
        build(local, PARAMS)
        lensdb.query("SELECT count(*) FROM v1.records", url)  # builds the local catalog cache once
        results = {}
        remote_con, local_con = lensdb.connect(url), lensdb.connect(local)
        try:
            for name, sql in QUERIES.items():
                local_seconds, local_table = best_of(lambda sql=sql: catalog.run_sql(local_con, sql, local), repeat)
                remote_seconds, remote_table = best_of(lambda sql=sql: catalog.run_sql(remote_con, sql, url), repeat)
                if not remote_table.equals(local_table):
                    raise SystemExit(f"{name}: the remote result differs from the local one")
                # Cold: a new process (no file or listing cache; the catalog cache on disk).
                cold = subprocess.run([sys.executable, "-c", COLD_QUERY, url, sql], check=True, capture_output=True, text=True,
                                      env=os.environ | {"PYTHONPATH": str(BENCH_DIR.parent)})
                if os.environ.get("BENCH_DEBUG"):
                    print(name, cold.stderr, file=sys.stderr)
                results[name] = {"rows": remote_table.num_rows, "remote_seconds": remote_seconds, "local_seconds": local_seconds,
                                 **json.loads(cold.stdout.strip().splitlines()[-1])}
        finally:
            remote_con.close()
            local_con.close()
        return {
            "params": PARAMS,
            "runs": PARAMS["models"],
            "write_remote_seconds": write_remote,
            "queries": results,
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.repeat)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['runs']} runs (one per model), written to s3 in {result['write_remote_seconds']:.1f} s")
    print("warm: best of 3 on one connection; cold: `lensdb.query` in a new process (its requests counted)")
    print(f"{'query':24} {'rows':>5} {'warm s':>7} {'local s':>8} {'cold s':>7} {'requests':>9} {'LIST':>5} {'HEAD':>5} {'GET':>5} {'runs read':>9}")
    for name, r in result["queries"].items():
        print(f"{name:24} {r['rows']:>5} {r['remote_seconds']:>7.3f} {r['local_seconds']:>8.3f} {r['cold_process_seconds']:>7.2f} {r['requests']:>9} {r['list']:>5} {r['head']:>5} {r['get']:>5} {r['runs_read']:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
