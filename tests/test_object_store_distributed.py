"""torchrun data parallelism into an object-store warehouse (moto's S3 server on localhost).

Two ranks write their own files under the run's final prefix (one writer token, a rank tag
each); rank 0 puts the manifest, listing both ranks' files, after the vote. The records equal
a one-process run's; a failing rank leaves no committed run, and what it left is cleaned.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

import lensdb
from lensdb.extract import engine
from lensdb.warehouse import layout, remote
from tests.object_store import SECRET_KEY
from tests.test_distributed import EXTRACT_ARGS, REPO, SORT_KEYS, torchrun

TABLE_SQL = {
    "prompts": "SELECT * EXCLUDE (run_id) FROM v1_base.prompts",
    "records": "SELECT * EXCLUDE (run_id) FROM v1_base.records",
    "finals": "SELECT * EXCLUDE (run_id) FROM v1_base.finals",
    "consistency": "SELECT * EXCLUDE (run_id) FROM v1_base.consistency",
}


def _table(sql: str, warehouse, table: str) -> pa.Table:
    return lensdb.query(sql, warehouse, allow_files=True).sort_by([(key, "ascending") for key in SORT_KEYS[table]])


def test_two_ranks_into_s3_write_the_records_of_one_process(tiny_llama, tiny_prompts, tmp_path, s3_env):
    single = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=tmp_path / "single", device="cpu", batch_size=2)
    url = s3_env.url("ranks")
    process = torchrun("-m", "lensdb", "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT_ARGS, env=s3_env.env)
    assert process.returncode == 0, process.stderr
    warehouse = layout.resolve_warehouse(url)
    surveyed = remote.survey(warehouse)
    assert [f.run_id for f in surveyed.folders] and surveyed.damaged == [] and surveyed.leftovers == []
    [folder] = surveyed.folders
    manifest_key = f"{layout.RUNS_DIR}/{folder.key}/{remote.MANIFEST_FILE}"
    import pyarrow.parquet as pq

    listed = json.loads(pq.ParquetFile(pa.BufferReader(warehouse.read_bytes(manifest_key))).schema_arrow.metadata[remote.FILES_KEY])
    # The manifest lists both ranks' files: rank 1's were written by another process.
    assert {name.rsplit("-", 2)[-2] for name in listed if name.startswith("records/")} == {"rank0", "rank1"}
    for table, sql in TABLE_SQL.items():
        expected, actual = _table(sql, single.path.parent.parent.parent, table), _table(sql, url, table)
        assert actual.num_rows == expected.num_rows > 0, table
        assert actual.drop_columns(["model"]).equals(expected.drop_columns(["model"])), table
    assert SECRET_KEY not in process.stdout + process.stderr


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_a_failed_rank_commits_nothing_in_s3(tiny_llama, tiny_prompts, s3_env, how):
    url = s3_env.url("failing")
    process = torchrun(
        REPO / "tests" / "distributed_driver.py", "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT_ARGS,
        env={**s3_env.env, "LENSDB_TEST_FAIL_RANK": "1", "LENSDB_TEST_FAIL_HOW": how},
    )
    assert process.returncode != 0
    warehouse = layout.resolve_warehouse(url)
    assert layout.run_folders(warehouse) == []
    if how == "raise":
        # Rank 0 learnt of the failure at the vote and deleted every rank's files.
        assert "rank 1 failed: RuntimeError: rank failed on purpose; nothing was committed" in process.stderr
        assert warehouse.listing(layout.RUNS_DIR) == {}
    # Whatever a dead rank left is uncommitted, and cleanup removes it.
    from lensdb import runs

    runs.cleanup(url, older_than_seconds=0)
    assert warehouse.listing(layout.RUNS_DIR) == {}
    summary = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=url, device="cpu", batch_size=2)
    assert [f.run_id for f in layout.run_folders(warehouse)] == [summary.run_id]
