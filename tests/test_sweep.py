"""`lensdb sweep`: one extract process per model, skipping models that already have a run of
the same prompts and settings; killed after the second of three models, it resumes with
the third; `--export` equals `lensdb export --run` of every run."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lensdb.extract import engine
from lensdb.run_settings import LensIdentity, RecordSettings
from lensdb.extract.config import ExtractConfig, option_of
from lensdb.sweep import read_models_file, run_streaming
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import rewrite_tensor_in_place

REPO = Path(__file__).resolve().parent.parent
OPTIONS = ["--device", "cpu", "--batch-size", "2", "--top-k", "5", "--quiet"]


def committed_runs(warehouse: Path) -> list[Path]:
    """In the order they were extracted."""
    return sorted((warehouse / "runs").glob("model=*/run=*"), key=lambda run: manifest(run)["created_at"])


def staged(warehouse: Path) -> list[Path]:
    folder = warehouse / "_staging"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def manifest(run: Path) -> dict:
    return pq.read_table(run / "manifest").to_pylist()[0]


def table_rows(output: str) -> dict[str, list[str]]:
    """The sweep's table: model -> [run, time, records, status]."""
    lines = output.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["model", "run"])
    rows = {}
    for line in lines[header + 1 :]:
        cells = line.split()
        if cells[1] == "models:":
            break
        time_cells = 2 if cells[2] != "-" else 1  # "12.3 s" or "-"
        rows[cells[0]] = [cells[1], " ".join(cells[2 : 2 + time_cells]), cells[2 + time_cells], " ".join(cells[3 + time_cells :])]
    return rows


def test_models_file_lines_comments_and_blanks(tmp_path):
    path = tmp_path / "models.txt"
    path.write_text("# the sweep\n\nmeta-llama/Meta-Llama-3-8B\n  ./models/tiny   # a local one\nmodel#7\n   \n# end\n")
    assert read_models_file(path) == ["meta-llama/Meta-Llama-3-8B", "./models/tiny", "model#7"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    for bad, message in ((tmp_path / "empty.txt", "lists no model"), (tmp_path / "missing.txt", "cannot read the models file")):
        result = run_cli("sweep", bad)
        assert result.exit_code == 2 and message in result.stderr


def test_extract_options_round_trip_through_extracts_parser():
    from lensdb.cli import _sweep_options

    options = ExtractConfig(
        lenses="norm,raw", reference_lens="raw", unembed="float32", top_k=7, device="cpu", dtype="float16",
        revision="v1", batch_size=3, keep_residuals=True, seed=5, quiet=True,
    )
    assert _sweep_options(options.to_args()) == options
    assert _sweep_options([]) == ExtractConfig()  # the sweep's defaults are extract's
    result = run_cli("sweep", "models.txt", "--run-id", "x")
    assert result.exit_code == 2 and "--run-id names one run" in result.stderr
    result = run_cli("sweep", "models.txt", "--no-such-option")
    assert result.exit_code == 2 and "extract option: No such option '--no-such-option'" in result.stderr


# Fields of the config that a sweep refuses (they name one run), and extract's own parameters
# beside the config: the sweep sets them itself or they only shape extract's output.
PER_RUN = {f.name for f in dataclasses.fields(ExtractConfig) if option_of(f).per_run}
SWEEP_OWN = {"model", "prompts", "warehouse", "as_json"} | PER_RUN
# A value other than the default for each option a sweep passes on.
GIVEN = {"lenses": "norm,raw", "reference_lens": "raw", "unembed": "float32", "top_k": "7", "device": "cpu",
         "device_map": "balanced", "max_memory": "cpu=2GiB", "offload_folder": "{tmp}", "dtype": "float16", "revision": "v1",
         "batch_size": "3", "keep_residuals": True, "seed": "5", "quiet": True, "sites": "all",
         "track": "capital=Paris,Berlin", "attribution": True}


def test_every_extract_option_reaches_the_models_extract(tmp_path):
    """Given to the sweep, each field of ExtractConfig with a flag comes out of to_args() as
    given (--device-map, --max-memory and --offload-folder were once parsed and dropped)."""
    from lensdb.cli import _sweep_options, extract, main

    passed_on = [f for f in dataclasses.fields(ExtractConfig) if option_of(f).flag is not None and f.name not in PER_RUN]
    assert sorted(GIVEN) == sorted(f.name for f in passed_on), "a new option needs a non-default value in GIVEN"
    given = []
    for config_field in passed_on:
        value = GIVEN[config_field.name]
        given += [option_of(config_field).flag] + ([] if value is True else [value.format(tmp=tmp_path)])
    with extract.make_context("lensdb extract", ["MODEL", *given], **main.context_settings) as context:
        expected = {k: v for k, v in context.params.items() if k not in SWEEP_OWN}
    defaults = {p.name: p.default for p in extract.params}
    assert sorted(expected) == sorted(p.name for p in extract.params if p.name not in SWEEP_OWN)
    assert all(expected[name] != defaults[name] for name in expected), "give every option a non-default value"
    with extract.make_context("lensdb extract", ["MODEL", *_sweep_options(given).to_args()], **main.context_settings) as context:
        passed = {k: v for k, v in context.params.items() if k not in SWEEP_OWN}
    assert passed == expected


def test_the_recorded_fields_are_the_settings_hash():
    """Each option marked `records` in the config is a field of RecordSettings, and only those."""
    recorded = {f.name for f in dataclasses.fields(ExtractConfig) if option_of(f).records}
    assert recorded == {f.name for f in dataclasses.fields(RecordSettings)}


@pytest.mark.parametrize(
    "options, message",
    [
        ({"top_k": 0}, "--top-k must be at least 1"),
        ({"batch_size": 0}, "--batch-size must be at least 1"),
        ({"dtype": "float64"}, "--dtype float64: choose auto, float32, float16 or bfloat16"),
        ({"unembed": "half"}, "--unembed half: choose auto, float32 or split"),
        ({"lenses": "norm", "reference_lens": "raw"}, "--reference-lens raw is not among the run's lenses (norm)"),
        ({"lenses": "logit"}, "unknown lens logit"),
        ({"run_id": "../up"}, "invalid run id"),
        ({"seed": 2**64}, "is outside 64 bits"),
    ],
)
def test_a_bad_config_is_one_line_when_it_is_built(options, message):
    """The library's checks are the config's: the same one-line errors as the command line's."""
    from lensdb.errors import LensdbError

    with pytest.raises(LensdbError) as caught:
        ExtractConfig(**options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_settings_hash_is_the_sha256_of_the_canonical_settings(tmp_path):
    settings = ExtractConfig(lenses="norm,x=raw", top_k=5).record_settings(tmp_path)
    canonical = (
        '{"dtype":"auto","keep_residuals":false,"lenses":[{"kind":"norm","name":"norm","sha256":null},'
        '{"kind":"raw","name":"x","sha256":null}],"reference_lens":"norm","revision":null,'
        '"settings_version":1,"top_k":5,"unembed":"auto"}'
    )
    assert settings.sha256() == hashlib.sha256(canonical.encode()).hexdigest()
    base = ExtractConfig().record_settings(tmp_path).sha256()
    for changed in (
        ExtractConfig(top_k=5), ExtractConfig(lenses="norm,final_ln"), ExtractConfig(dtype="float16"),
        ExtractConfig(revision="main"), ExtractConfig(unembed="float32"), ExtractConfig(keep_residuals=True),
        ExtractConfig(reference_lens="raw"), ExtractConfig(sites="all"), ExtractConfig(sites="mid"),
    ):
        assert changed.record_settings(tmp_path).sha256() != base, changed
    for same in (ExtractConfig(device="cpu", batch_size=3, seed=1, quiet=True), ExtractConfig(reference_lens="norm")):
        assert same.record_settings(tmp_path).sha256() == base, same


def test_tuned_lens_is_hashed_by_content_not_path(tmp_path):
    for folder, data in ((tmp_path / "a", b"weights-1"), (tmp_path / "b", b"weights-1"), (tmp_path / "c", b"weights-2")):
        folder.mkdir()
        (folder / "params.pt").write_bytes(data)
    stored = tmp_path / "warehouse" / "lenses" / "mine"
    stored.mkdir(parents=True)
    (stored / "params.pt").write_bytes(b"weights-2")

    def identity(spec: str) -> LensIdentity:
        return ExtractConfig(lenses=spec).record_settings(tmp_path / "warehouse").lenses[0]

    assert identity(f"t=tuned:{tmp_path / 'a'}") == LensIdentity("t", "tuned", hashlib.sha256(b"weights-1").hexdigest())
    assert identity(f"t=tuned:{tmp_path / 'b'}") == identity(f"t=tuned:{tmp_path / 'a'}")
    assert identity(f"t=tuned:{tmp_path / 'c'}") == identity("t=tuned:mine") == LensIdentity("t", "tuned", hashlib.sha256(b"weights-2").hexdigest())
    assert identity("t=tuned:absent").sha256 is None


def test_manifest_records_the_settings_hash_the_sweep_computes(tiny_llama, tiny_prompts, warehouse):
    summary = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", batch_size=2, top_k=5, lenses="norm,raw")
    recorded = manifest(summary.path)["settings_sha256"]
    assert recorded == ExtractConfig(lenses="norm,raw", top_k=5).record_settings(warehouse).sha256()
    assert recorded == RecordSettings(
        lenses=(LensIdentity("norm", "norm"), LensIdentity("raw", "raw")), reference_lens="norm", top_k=5, dtype="auto",
        revision=None, unembed="auto", keep_residuals=False,
    ).sha256()


def test_child_output_streams_through_a_terminal_when_the_log_is_one():
    script = "import sys; print(sys.stderr.isatty()); print('lensdb: error: no such thing', file=sys.stderr); sys.exit(3)"
    for tty in (True, False):
        log = io.StringIO()
        assert run_streaming([sys.executable, "-c", script], log, tty=tty) == (3, "no such thing")
        assert log.getvalue().split()[0] == str(tty)


def test_failed_models_do_not_stop_the_sweep(tiny_llama, tiny_prompts, warehouse, tmp_path):
    done = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", batch_size=2, top_k=5)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertForMaskedLM"]}))
    models = tmp_path / "models.txt"
    models.write_text(f"{broken}\n{tmp_path / 'missing'}\n{tiny_llama}\n")
    result = run_cli("sweep", models, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS)
    assert result.exit_code == 1
    rows = table_rows(result.stdout)
    # The table cuts long reasons to stay on one screen; the log line above it has them whole.
    broken_reason = f"failed: {broken} is not a causal language model (BertForMaskedLM)"
    missing_reason = f"failed: no such model directory: {tmp_path / 'missing'}"
    assert f"sweep [1/3] {broken}: {broken_reason}" in result.stderr
    assert f"sweep [2/3] {tmp_path / 'missing'}: {missing_reason}" in result.stderr
    for model, reason in ((broken, broken_reason), (tmp_path / "missing", missing_reason)):
        run, seconds, records, status = rows[str(model)]
        assert (run, records) == ("-", "-") and status.endswith("…") and reason.startswith(status.removesuffix("…"))
    assert rows[str(broken)][1].endswith(" s"), "the failed extract process was timed"
    assert rows[str(tiny_llama)] == [done.run_id, "-", f"{done.rows['records']:,}", "skipped"]
    assert "3 models: 0 done, 1 skipped, 2 failed" in result.stdout
    assert committed_runs(warehouse) == [done.path]


def test_killed_sweep_resumes_with_the_third_model(tiny_llama, tiny_gpt2, tiny_gemma2, tiny_prompts, warehouse, tmp_path):
    models = [tiny_llama, tiny_gpt2, tiny_gemma2]
    models_file = tmp_path / "models.txt"
    models_file.write_text("# three tiny models\n" + "".join(f"{m}\n" for m in models))
    command = [sys.executable, "-m", "lensdb", "sweep", models_file, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS]
    environment = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    sweep = subprocess.Popen(list(map(str, command)), cwd=REPO, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        # Killed (the sweep and its extract) once two runs are committed and the third extract is writing.
        while not (len(committed_runs(warehouse)) == 2 and staged(warehouse)):
            assert sweep.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(sweep.pid, signal.SIGKILL)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    first, second = committed_runs(warehouse)
    assert [manifest(run)["model"] for run in (first, second)] == [tiny_llama.name, tiny_gpt2.name]

    result = run_cli("sweep", models_file, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS, "--export", tmp_path / "sweep-export")
    assert result.exit_code == 0, result.stderr
    runs = committed_runs(warehouse)
    assert len(runs) == 3 and runs[:2] == [first, second]
    assert manifest(runs[2])["model"] == tiny_gemma2.name
    assert staged(warehouse) == [], "the killed extract's staging folder was removed"
    rows = table_rows(result.stdout)
    assert [rows[str(m)][3] for m in models] == ["skipped", "skipped", "done"]
    assert [rows[str(m)][0] for m in models] == [manifest(run)["run_id"] for run in runs]
    for model, run in zip(models, runs):
        records = pq.read_table(run / "records").num_rows
        assert rows[str(model)][2] == f"{records:,}"
    assert "sweep [3/3]" in result.stderr and "3 models: 1 done, 2 skipped, 0 failed" in result.stdout

    # --export writes what `lensdb export --run` writes for each run, byte for byte.
    for run in runs:
        assert run_cli("export", "--run", manifest(run)["run_id"], "--warehouse", warehouse, "--out", tmp_path / "single-export").exit_code == 0
    exported = sorted(p.name for p in (tmp_path / "sweep-export").iterdir())
    assert len(exported) == 9 and exported == sorted(p.name for p in (tmp_path / "single-export").iterdir())
    for name in exported:
        assert (tmp_path / "sweep-export" / name).read_bytes() == (tmp_path / "single-export" / name).read_bytes(), name

    # Run once more: every model is skipped, nothing is extracted.
    again = run_cli("sweep", models_file, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS)
    assert again.exit_code == 0 and "3 models: 0 done, 3 skipped, 0 failed" in again.stdout
    assert committed_runs(warehouse) == runs


def test_sigterm_stops_the_sweep_and_its_extract(tiny_llama, tiny_prompts, warehouse, tmp_path):
    """SIGTERM to the sweep alone (as a batch scheduler sends it): the running extract is
    stopped too (no orphan keeps extracting), the table so far is printed, exit code 130."""
    models_file = tmp_path / "models.txt"
    models_file.write_text(f"{tiny_llama}\n")
    command = [sys.executable, "-m", "lensdb", "sweep", models_file, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS]
    environment = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    sweep = subprocess.Popen(list(map(str, command)), cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not staged(warehouse):  # the extract is running
            assert sweep.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        sweep.send_signal(signal.SIGTERM)
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    assert sweep.returncode == 130, stderr
    assert "lensdb: error: sweep interrupted; the models marked done are committed" in stderr
    assert f"{tiny_llama}  -" in stderr and "failed: interrupted" in stderr
    deadline = time.monotonic() + 30
    while True:  # every process of the sweep's group has ended
        try:
            os.killpg(sweep.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the extract outlived the sweep"
        time.sleep(0.1)
    assert committed_runs(warehouse) == []


@pytest.mark.parametrize("sampled", [False, True], ids=["hashed-whole", "sampled"])
def test_a_local_fingerprint_covers_the_weights_content(tiny_llama, tmp_path, monkeypatch, sampled):
    """Issue 21.3: the fingerprint held config, file names and sizes only. A copy of the folder
    keeps it; a tensor rewritten in place (same size) changes it, whole-file hash or sampled."""
    import shutil

    from lensdb.extract import source as model_module

    if sampled:  # the sampled hash of large files, on a tiny one
        monkeypatch.setattr(model_module, "WHOLE_HASH_BYTES", 1024)
        monkeypatch.setattr(model_module, "SAMPLE_BLOCK_BYTES", 64)
        monkeypatch.setattr(model_module, "TENSOR_END_BYTES", 16)

    def fingerprint(folder: Path) -> str:
        return model_module.resolved_revision(model_module.resolve_source(str(folder)), None)

    copy = shutil.copytree(tiny_llama, tmp_path / "copy")
    before = fingerprint(copy)
    assert before == fingerprint(tiny_llama) and before.startswith("local-")
    rewrite_tensor_in_place(copy, "model.layers.1.mlp.up_proj.weight")
    assert fingerprint(copy) != before


def test_sweep_extracts_again_a_model_whose_weights_changed_in_place(tiny_llama, tiny_prompts, warehouse, tmp_path):
    """Issue 21.3: the sweep skipped such a model and kept the old run."""
    import shutil

    model = shutil.copytree(tiny_llama, tmp_path / "tiny-llama")
    models = tmp_path / "models.txt"
    models.write_text(f"{model}\n")
    first = run_cli("sweep", models, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS)
    assert first.exit_code == 0 and "1 models: 1 done" in first.stdout, first.output
    same = run_cli("sweep", models, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS)
    assert "1 models: 0 done, 1 skipped" in same.stdout, same.output
    rewrite_tensor_in_place(model, "model.layers.1.mlp.up_proj.weight")
    changed = run_cli("sweep", models, "--prompts", tiny_prompts, "--warehouse", warehouse, *OPTIONS)
    assert changed.exit_code == 0 and "1 models: 1 done, 0 skipped" in changed.stdout, changed.output
    old, new = committed_runs(warehouse)
    assert manifest(old)["model_revision"] != manifest(new)["model_revision"]


def test_export_of_two_models_with_one_file_name_is_refused_before_any_work(tiny_llama, tiny_gpt2, tiny_prompts, warehouse, tmp_path):
    """Issue 21.5: `sweep --export` of two models whose names share a file stem overwrote one
    model's legacy files with the other's. Refused in one line naming both, before any extract."""
    import shutil

    one = shutil.copytree(tiny_llama, tmp_path / "one" / "tiny")
    two = shutil.copytree(tiny_gpt2, tmp_path / "two" / "tiny")
    models = tmp_path / "models.txt"
    models.write_text(f"{one}\n{two}\n{one}\n")
    result = run_cli("sweep", models, "--prompts", tiny_prompts, "--warehouse", warehouse, "--export", tmp_path / "out", *OPTIONS)
    assert_one_line_error(result, f"the models {one} and {two} would both be written as output-tiny.json")
    assert not warehouse.exists() and not (tmp_path / "out").exists()
