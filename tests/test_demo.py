"""The demo model shipped in the package: `lensdb extract demo` runs offline on a fresh
install, and its files are the shared stories260K fixture byte for byte."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest

from lensdb.resources import DEMO_MODEL, demo_model_dir
from tests.conftest import SHARED_STORIES
from tests.cli_helpers import assert_one_line_error, run_cli

MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_ships_with_its_licence_and_origin():
    folder = demo_model_dir()
    for name in (*MODEL_FILES, "LICENSE", "ORIGIN.md"):
        assert (folder / name).is_file(), name
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert "llama2.c" in (folder / "ORIGIN.md").read_text()


@pytest.mark.skipif(not SHARED_STORIES.is_dir(), reason="../shared/fixtures/models/stories260K is not available")
def test_demo_files_are_the_shared_fixture():
    for name in MODEL_FILES:
        assert _sha256(demo_model_dir() / name) == _sha256(SHARED_STORIES / name), name


def test_extract_demo_then_query(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default warehouse, ./warehouse, as a user's first run
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the hub
    monkeypatch.delenv("LENSDB_WAREHOUSE", raising=False)
    result = run_cli("extract", DEMO_MODEL, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["model"] == "stories260K" and summary["n_prompts"] == 3  # the stories set
    assert (tmp_path / "warehouse" / "runs" / "model=stories260K").is_dir()
    result = run_cli("query", "--format", "csv", "SELECT prompt_id, count(*) AS n FROM v1.records GROUP BY ALL ORDER BY prompt_id")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["prompt_id"] for row in rows] == ["ball", "lily", "tom"]
    assert sum(int(row["n"]) for row in rows) == summary["rows"]["records"]


def test_a_local_folder_named_demo_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    result = run_cli("extract", DEMO_MODEL, "--warehouse", tmp_path / "wh")
    assert_one_line_error(result, "has no config.json")
