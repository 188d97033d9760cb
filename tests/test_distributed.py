"""Data-parallel extraction under torchrun: CPU, gloo, two processes.

A two-rank run commits one run whose every table equals a one-process run's; a rank that
fails (raises, or dies outright) leaves no committed run and a warehouse the next extract
uses normally. Plus the deal of batches to ranks and the combined last-layer check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import given, strategies as st

import lensdb
from lensdb.extract import distributed, engine
from lensdb.extract.distributed import RankReport, combined_check, deal

REPO = Path(__file__).resolve().parent.parent
SORT_KEYS = {
    "prompts": ["prompt_index"],
    "records": ["prompt_id", "prompt_variant", "lens", "layer", "pos"],
    "finals": ["prompt_id", "prompt_variant", "temperature"],
    "consistency": ["prompt_id", "prompt_variant", "lens"],
}
# Manifest facts that do not depend on how many processes ran.
SAME_MANIFEST = [
    "model", "model_revision", "n_layers", "d_vocab", "dtype", "lenses", "top_k", "prompt_set_sha256",
    "last_layer_max_kl_bits", "last_layer_top1_agreement", "last_layer_flagged", "settings_sha256",
    "reference_lens", "unembed_precision", "lens_details",
]
EXTRACT_ARGS = ["--device", "cpu", "--batch-size", "2"]  # 6 prompts: 3 batches for 2 ranks


def committed_runs(warehouse: Path) -> list[Path]:
    return sorted((warehouse / "runs").glob("model=*/run=*"))


def staged(warehouse: Path) -> list[Path]:
    folder = warehouse / "_staging"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def torchrun(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    """Two processes on this machine (--standalone picks a free port), this checkout's lensdb."""
    environment = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])} | (env or {})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment, timeout=600)


def read_table(run: Path, table: str):
    return ds.dataset(run / table, format="parquet").to_table().sort_by([(key, "ascending") for key in SORT_KEYS[table]])


def test_two_ranks_write_the_records_of_one_process(tiny_llama, tiny_prompts, tmp_path):
    single = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=tmp_path / "single", device="cpu", batch_size=2)
    warehouse = tmp_path / "ranks"
    process = torchrun("-m", "lensdb", "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, *EXTRACT_ARGS)
    assert process.returncode == 0, process.stderr
    [run] = committed_runs(warehouse)
    assert staged(warehouse) == []
    # Both ranks wrote records: the run holds files of rank 0 and rank 1.
    assert {p.name for p in (run / "records").iterdir()} == {f"{part}-rank{r}-00000.parquet" for part in ("part", "next") for r in (0, 1)}
    for table in SORT_KEYS:
        expected, actual = read_table(single.path, table), read_table(run, table)
        assert actual.num_rows == expected.num_rows > 0, table
        assert actual.equals(expected), table
    manifest = pq.read_table(run / "manifest").to_pylist()[0]
    reference = pq.read_table(single.path / "manifest").to_pylist()[0]
    assert {key: manifest[key] for key in SAME_MANIFEST} == {key: reference[key] for key in SAME_MANIFEST}
    assert (manifest["world_size"], reference["world_size"]) == (2, 1)
    # The summary is printed once, by rank 0, and counts every rank's records.
    assert process.stdout.count("records    ") == 1, "rank 0 alone prints the summary (on stdout)"
    assert f"records    {single.rows['records']:,}" in process.stdout and "ranks 2" in process.stdout
    counted = lensdb.query("SELECT count(*) AS n FROM v1.records", warehouse).column("n").to_pylist()
    assert counted == [single.rows["records"]]

    # An error of rank 0 before the ranks start (here: the run id is taken) stops every rank.
    run_id = manifest["run_id"]
    again = torchrun("-m", "lensdb", "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, "--run-id", run_id, *EXTRACT_ARGS)
    assert again.returncode != 0
    assert f"lensdb: error: run id {run_id} already exists in {warehouse}" in again.stderr
    assert f"lensdb: error: rank 0 failed: run id {run_id} already exists in {warehouse}" in again.stderr
    assert committed_runs(warehouse) == [run] and staged(warehouse) == []


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_rank_commits_nothing(tiny_llama, tiny_prompts, warehouse, how):
    process = torchrun(
        REPO / "tests" / "distributed_driver.py", "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, *EXTRACT_ARGS,
        env={"LENSDB_TEST_FAIL_RANK": "1", "LENSDB_TEST_FAIL_HOW": how},
    )
    assert process.returncode != 0
    assert committed_runs(warehouse) == []
    if how == "raise":
        # Rank 0 learnt of the failure at the vote and removed the shared staging folder.
        assert "lensdb: error: rank 1 failed: RuntimeError: rank failed on purpose; nothing was committed" in process.stderr
        assert staged(warehouse) == []
    # The next extract starts clean: it commits, and removes what a dead rank 0 left behind.
    summary = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", batch_size=2)
    assert committed_runs(warehouse) == [summary.path]
    assert staged(warehouse) == []


@given(st.lists(st.integers(min_value=1, max_value=10_000), max_size=40), st.integers(min_value=1, max_value=8))
def test_deal_gives_every_batch_to_one_rank_balanced_by_tokens(costs, n_ranks):
    shares = deal(costs, n_ranks)
    assert len(shares) == n_ranks
    assert sorted(i for share in shares for i in share) == list(range(len(costs)))
    assert all(share == sorted(share) for share in shares)
    loads = [sum(costs[i] for i in share) for share in shares]
    # Greedy to the least-loaded rank: no rank exceeds another by more than one batch.
    assert max(loads) - min(loads) <= max(costs, default=0)
    assert deal(list(costs), n_ranks) == shares


def test_deal_balances_tokens_not_batch_counts():
    assert deal([100, 10, 10, 10, 10, 10], 2) == [[0], [1, 2, 3, 4, 5]]
    assert deal([5, 5, 5], 4) == [[0], [1], [2], []]


def test_combined_check_takes_the_largest_kl_and_sums_agreements():
    reports = [RankReport(0, None, (1e-6, 3, 4)), RankReport(1, None, (2e-4, 2, 2)), RankReport(2, None, (0.0, 0, 0))]
    check = combined_check(reports, flag_threshold_bits=1e-4)
    assert (check.max_kl_bits, check.agreeing, check.prompts) == (2e-4, 5, 6)
    assert check.top1_agreement == 5 / 6 and check.flagged
    assert distributed.summed_rows([RankReport(0, None, rows={"records": 3, "prompts": 6}), RankReport(1, None, rows={"records": 4})]) == {
        "records": 7,
        "prompts": 6,
    }


def test_a_single_process_is_rank_zero_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks = distributed.from_environment("cpu")
    assert (ranks.rank, ranks.world_size, ranks.file_tag, ranks.leader, ranks.distributed) == (0, 1, "", True, False)
    assert ranks.share([3, 1, 2]) == [0, 1, 2]
    assert ranks.from_leader(lambda: 42) == 42


def test_writers_share_one_staging_folder(tmp_path):
    import pyarrow as pa

    from lensdb.errors import WarehouseError
    from lensdb.warehouse.writer import RunWriter

    schema = pa.schema([("x", pa.int32())])
    manifest_schema = pa.schema([("run_id", pa.string())])
    leader = RunWriter(tmp_path, "m", "run-1", file_tag="-rank0")
    leader.open()
    leader.append("t", pa.table({"x": [1, 2]}, schema=schema), schema)
    helper = RunWriter.join(tmp_path, "m", "run-1", leader.staging.name, file_tag="-rank1")
    helper.open()
    helper.append("t", pa.table({"x": [3]}, schema=schema), schema)
    helper.finish()
    with pytest.raises(WarehouseError, match="only the writer that opened"):
        helper.commit(pa.table({"run_id": ["run-1"]}), manifest_schema)
    failing = RunWriter.join(tmp_path, "m", "run-1", leader.staging.name, file_tag="-rank2")
    failing.open()
    failing.append("t", pa.table({"x": [4]}, schema=schema), schema)
    failing.abort()  # removes its own file only
    assert sorted(p.name for p in (leader.staging / "t").iterdir()) == ["part-rank0-00000.parquet", "part-rank1-00000.parquet"]
    path = leader.commit(pa.table({"run_id": ["run-1"]}), manifest_schema)
    assert sorted(pq.read_table(path / "t").column("x").to_pylist()) == [1, 2, 3]
    assert (helper.rows_written, leader.rows_written["t"]) == ({"t": 1}, 2)
    with pytest.raises(WarehouseError, match="staging folder .* is missing"):
        RunWriter.join(tmp_path, "m", "run-1", leader.staging.name, file_tag="-rank3").open()
