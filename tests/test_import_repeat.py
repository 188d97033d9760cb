"""import-legacy recognises files it imported before (by content, from the manifests) and says so
instead of adding duplicate runs; --force imports them again."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import lensdb
from tests.conftest import LEGACY_RUN
from tests.cli_helpers import run_cli

pytestmark = pytest.mark.skipif(not LEGACY_RUN.is_dir(), reason="../shared/fixtures/legacy-run-2025-08-30 is not available")


def runs_by_model(warehouse: Path) -> dict[str, list[str]]:
    rows = lensdb.query("SELECT model, run_id FROM v1.runs ORDER BY model, created_at, run_id", warehouse=warehouse).to_pylist()
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["model"], []).append(row["run_id"])
    return found


def imported_lines(result) -> dict[str, str]:
    assert result.exit_code == 0, result.stderr
    return {line.split()[0]: line for line in result.stdout.splitlines()}


def test_a_folder_imported_twice_is_recognised(tmp_path):
    warehouse = tmp_path / "warehouse"
    first = imported_lines(run_cli("import-legacy", LEGACY_RUN, "--warehouse", warehouse))
    runs = runs_by_model(warehouse)
    assert len(first) == 3 and all(len(ids) == 1 for ids in runs.values())

    # The same files from another folder: recognised by content.
    copy = Path(shutil.copytree(LEGACY_RUN, tmp_path / "copy"))
    again = imported_lines(run_cli("import-legacy", copy, "--warehouse", warehouse))
    for model, ids in runs.items():
        assert f"already imported as run {ids[0]}" in again[model]
    assert runs_by_model(warehouse) == runs

    # One model's files changed: only that model is imported again.
    changed = copy / "output-Qwen3-8B.json"
    changed.write_bytes(changed.read_bytes() + b"\n")
    third = imported_lines(run_cli("import-legacy", copy, "--warehouse", warehouse))
    assert "already imported" not in third["Qwen/Qwen3-8B"] and "records)" in third["Qwen/Qwen3-8B"]
    assert all("already imported" in line for model, line in third.items() if model != "Qwen/Qwen3-8B")
    after = runs_by_model(warehouse)
    assert len(after["Qwen/Qwen3-8B"]) == 2 and all(len(ids) == 1 for model, ids in after.items() if model != "Qwen/Qwen3-8B")

    forced = imported_lines(run_cli("import-legacy", LEGACY_RUN, "--warehouse", warehouse, "--force"))
    assert not any("already imported" in line for line in forced.values())
    assert sum(len(ids) for ids in runs_by_model(warehouse).values()) == 3 + 1 + 3


def test_the_manifest_holds_the_hash_of_the_three_files(tmp_path):
    warehouse = tmp_path / "warehouse"
    assert run_cli("import-legacy", LEGACY_RUN, "--warehouse", warehouse).exit_code == 0
    rows = lensdb.query("SELECT model, source_files_sha256 FROM v1.runs", warehouse=warehouse).to_pylist()
    stems = {"meta-llama/Meta-Llama-3-8B": "Meta-Llama-3-8B", "Qwen/Qwen3-8B": "Qwen3-8B", "google/gemma-2-9b": "gemma-2-9b"}
    for row in rows:
        stem = stems[row["model"]]
        digest = hashlib.sha256()
        for name in (f"output-{stem}.json", f"output-{stem}-records.csv", f"output-{stem}-pure-next-token.csv"):
            digest.update(hashlib.sha256((LEGACY_RUN / name).read_bytes()).digest())
        assert row["source_files_sha256"] == digest.hexdigest()
