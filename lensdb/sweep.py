"""`sweep`: extract a list of models one after another, each in a process of its own.

    lensdb sweep MODELS.txt --prompts capitals [extract options] [--export DIR]

Every model runs as `python -m lensdb extract MODEL ...` with its progress streamed through,
so a model's memory is returned before the next one loads. A model that already has a
committed run of the same prompt set (prompt_set_sha256) and the same settings
(settings_sha256, lensdb/run_settings.py) is skipped: a sweep that crashed or was killed
resumes with the first model it had not finished. A model that fails does not stop the
sweep; the sweep ends with a table (model, run, time, records, status) and, with
`export_dir`, the legacy files of every model's run.

MODELS.txt: one model per line (a hub id or a model directory, as `lensdb extract` takes
it, relative paths from the current directory); `#` starts a comment; blank lines are
ignored.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from lensdb.errors import LensdbError, ModelError
from lensdb.lenses import DEFAULT_LENSES, LensSpec, parse_lens_specs, reference_lens
from lensdb.run_settings import LensIdentity, RecordSettings
from lensdb.warehouse import layout

DONE, SKIPPED, FAILED = "done", "skipped", "failed"
TUNED_STORE_DIR = "lenses"  # lensdb/tuned/store.py: <warehouse>/lenses/<name>/params.pt
NOTE_WIDTH = 60  # a failed model's reason, cut to keep the table on one screen


class SweepInterrupted(LensdbError):
    """Ctrl-C during a sweep: the models already done stay committed."""

    exit_code = 130


@dataclass(frozen=True)
class ExtractOptions:
    """The `lensdb extract` options a sweep gives every model (defaults: extract's)."""

    lenses: str = ",".join(DEFAULT_LENSES)
    reference_lens: str | None = None
    unembed: str = "auto"
    top_k: int = 20
    device: str = "auto"
    dtype: str = "auto"
    revision: str | None = None
    batch_size: int | None = None
    keep_residuals: bool = False
    seed: int = 316
    quiet: bool = False
    device_map: str | None = None
    max_memory: str | None = None
    offload_folder: str | None = None
    sites: str = "post"  # issue 20: --sites

    def args(self) -> list[str]:
        """The options as `lensdb extract` arguments."""
        args = ["--lens", self.lenses, "--unembed", self.unembed, "--top-k", str(self.top_k)]
        args += ["--device", self.device, "--dtype", self.dtype, "--seed", str(self.seed)]
        if self.reference_lens:
            args += ["--reference-lens", self.reference_lens]
        if self.revision:
            args += ["--revision", self.revision]
        if self.batch_size:
            args += ["--batch-size", str(self.batch_size)]
        if self.keep_residuals:
            args.append("--keep-residuals")
        for flag, value in (("--device-map", self.device_map), ("--max-memory", self.max_memory), ("--offload-folder", self.offload_folder)):
            if value:
                args += [flag, value]
        if self.sites != "post":
            args += ["--sites", self.sites]
        if self.quiet:
            args.append("--quiet")
        return args

    def record_settings(self, warehouse: Path) -> RecordSettings:
        """The settings an extract with these options records (manifest.settings_sha256)."""
        specs = parse_lens_specs(self.lenses)
        return RecordSettings(
            lenses=tuple(_lens_identity(spec, warehouse) for spec in specs),
            reference_lens=reference_lens(specs, self.reference_lens),
            top_k=self.top_k,
            dtype=self.dtype,
            revision=self.revision,
            unembed=self.unembed,
            keep_residuals=self.keep_residuals,
            sites=self.sites,
        )


@dataclass
class SweepRow:
    model: str  # as the models file names it
    status: str  # done, skipped or failed
    run_id: str | None = None
    seconds: float | None = None  # this sweep's time on the model (none when skipped)
    records: int | None = None
    note: str = ""  # why it failed
    exported: list[Path] = field(default_factory=list)


def read_models_file(path: str | os.PathLike) -> list[str]:
    """The models a models file lists, in order."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LensdbError(f"cannot read the models file {path}: {exc.strerror or exc}") from None
    models = []
    for line in text.splitlines():
        model = _strip_comment(line)
        if model:
            models.append(model)
    if not models:
        raise LensdbError(f"the models file {path} lists no model (one per line; '#' starts a comment)")
    return models


def _strip_comment(line: str) -> str:
    """`model  # comment` -> `model` (a '#' inside a name, without a space before it, stays)."""
    for index, char in enumerate(line):
        if char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].strip()
    return line.strip()


def sweep(
    models_file: str | os.PathLike,
    *,
    prompts: str | os.PathLike = "seed",
    warehouse: str | os.PathLike | None = None,
    options: ExtractOptions = ExtractOptions(),
    export_dir: str | os.PathLike | None = None,
    log: TextIO | None = None,
) -> list[SweepRow]:
    """Extract every model of `models_file` that has no committed run of these prompts and
    settings yet, one `lensdb extract` process after another; returns a row per model.

    The children's output, and one line per model, go to `log` (default stderr)."""
    from lensdb.prompts import load_prompt_set

    log = log or sys.stderr
    models = read_models_file(models_file)
    if export_dir is not None:
        check_export_names(models, options)
    plan = _Plan(
        prompts=prompts,
        prompt_set_sha256=load_prompt_set(prompts).sha256,  # a bad prompt set stops the sweep before any model
        warehouse=layout.resolve_warehouse(warehouse),
        options=options,
        log=log,
    )
    plan.settings_sha256 = options.record_settings(plan.warehouse).sha256()
    rows: list[SweepRow] = []
    try:
        with _terminate_as_interrupt():
            for number, model in enumerate(models, 1):
                rows.append(_sweep_one(plan, model, f"sweep [{number}/{len(models)}] {model}:"))
    except KeyboardInterrupt:
        if len(rows) < len(models):
            rows.append(SweepRow(models[len(rows)], FAILED, note="interrupted"))
        _fill_records(plan.warehouse, rows)
        _say(log, format_table(rows))
        raise SweepInterrupted("sweep interrupted; the models marked done are committed, run the sweep again to resume") from None
    _fill_records(plan.warehouse, rows)
    if export_dir is not None:
        _export(rows, plan.warehouse, Path(export_dir), options)
    return rows


def check_export_names(models: list[str], options: ExtractOptions) -> None:
    """Before any work: two models whose legacy files would have one name (the model name
    after its last '/') cannot be exported together, as `lensdb export` refuses them too."""
    from lensdb.extract.model import resolve_source
    from lensdb.legacy import format as fmt

    by_stem: dict[str, dict[str, str]] = {}
    for model in models:
        try:
            source = resolve_source(model, options.revision)
        except ModelError:
            continue  # it fails in its turn
        by_stem.setdefault(fmt.file_stem(source.name), {}).setdefault(source.load_from, model)
    for stem, listed in by_stem.items():
        if len(listed) > 1:
            first, second = list(listed.values())[:2]
            raise LensdbError(
                f"--export: the models {first} and {second} would both be written as {fmt.json_name(stem)}; "
                "sweep them without --export and export each run with `lensdb export --run`"
            )


@dataclass
class _Plan:
    """What every model of a sweep shares."""

    prompts: str | os.PathLike
    prompt_set_sha256: str
    warehouse: Path
    options: ExtractOptions
    log: TextIO
    settings_sha256: str = ""


def _sweep_one(plan: _Plan, model: str, prefix: str) -> SweepRow:
    found = _committed_run(plan, model)
    if isinstance(found, SweepRow):
        _say(plan.log, f"{prefix} failed: {found.note}")
        return found
    if found is not None:
        _say(plan.log, f"{prefix} skipped: committed run {found} has these prompts and settings")
        return SweepRow(model, SKIPPED, run_id=found)
    _say(plan.log, f"{prefix} extracting")
    row = _extract_one(plan, model)
    _say(plan.log, f"{prefix} {row.status}" + (f": {row.note}" if row.note else f" (run {row.run_id})"))
    return row


def _committed_run(plan: _Plan, model: str):
    """The latest committed run of `model` with the plan's hashes (its id), None, or a failed
    row when the model cannot be named at all."""
    from lensdb.extract.model import resolve_source, resolved_revision

    try:
        source = resolve_source(model, plan.options.revision)
    except ModelError as exc:
        return SweepRow(model, FAILED, note=str(exc))
    matching = [
        run
        for run in _runs(plan.warehouse)
        if run["model"] == source.name
        and run["prompt_set_sha256"] == plan.prompt_set_sha256
        and run["settings_sha256"] == plan.settings_sha256
        and (source.local_path is None or run["model_revision"] == resolved_revision(source, None))
    ]
    if not matching:
        return None
    return max(matching, key=lambda run: (run["finished_at"], run["run_id"]))["run_id"]


def _runs(warehouse: Path) -> list[dict]:
    from lensdb import catalog

    if (not layout.is_remote(warehouse) and not warehouse.is_dir()) or catalog.committed_run_count(warehouse) == 0:
        return []
    sql = "SELECT run_id, model, model_revision, prompt_set_sha256, settings_sha256, finished_at FROM v1.runs WHERE source = 'extract'"
    return catalog.query(sql, warehouse).to_pylist()


def _extract_one(plan: _Plan, model: str) -> SweepRow:
    run_id = layout.new_run_id()
    command = [sys.executable, "-m", "lensdb", "extract", model, "--prompts", str(plan.prompts), "--warehouse", str(plan.warehouse)]
    command += ["--run-id", run_id, *plan.options.args()]
    started = time.perf_counter()
    returncode, error_line = run_streaming(command, plan.log)
    seconds = time.perf_counter() - started
    if returncode == 0:
        return SweepRow(model, DONE, run_id=run_id, seconds=seconds)
    return SweepRow(model, FAILED, seconds=seconds, note=error_line or f"lensdb extract exited with code {returncode}")


def run_streaming(command: list[str], log: TextIO, tty: bool | None = None) -> tuple[int, str | None]:
    """Run `command` with this lensdb first on its path, its output copied to `log` as it
    comes; returns the exit code and the last `lensdb: error:` line.

    When `log` is a terminal (`tty`, POSIX), the child writes to a pseudo-terminal of the
    same size, so its progress bars draw as they would without the sweep."""
    import lensdb

    environment = dict(os.environ)
    package_root = str(Path(lensdb.__file__).resolve().parent.parent)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, environment.get("PYTHONPATH")) if p)
    if tty is None:
        tty = os.name == "posix" and hasattr(log, "isatty") and log.isatty()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    process, read, close = _spawn(command, environment, tty, log)
    try:
        while chunk := read():
            text = decoder.decode(chunk)
            log.write(text)
            log.flush()
            tail = (tail + text)[-8192:]
        returncode = process.wait()
    except BaseException:
        # Interrupted: the child stops as after Ctrl-C (removing its staging folder), or is killed.
        try:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            process.kill()
            process.wait()
        raise
    finally:
        close()
    errors = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.startswith("lensdb: error: ")]
    return returncode, errors[-1].removeprefix("lensdb: error: ") if errors else None


def _spawn(command: list[str], environment: dict, tty: bool, log: TextIO):
    """The child process, a function reading its next output bytes (b"" at the end), and one closing the reader."""
    if not tty:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment, preexec_fn=_die_with_parent
        )
        return process, lambda: process.stdout.read1(65536), process.stdout.close
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    try:
        size = os.get_terminal_size(log.fileno())
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size.lines, size.columns, 0, 0))
    except (OSError, ValueError, AttributeError):
        pass  # the pseudo-terminal keeps its default size
    try:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=environment, preexec_fn=_die_with_parent)
    finally:
        os.close(slave)

    def read() -> bytes:
        try:
            return os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return b""

    return process, read, lambda: os.close(master)


def _die_with_parent() -> None:
    """Linux: the extract is killed when the sweep dies, even by SIGKILL (no orphan keeps
    extracting while a resumed sweep starts the same model again)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (e.g. a batch scheduler's) stops the sweep like Ctrl-C: the running extract is
    stopped and the table so far printed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fill_records(warehouse: Path, rows: list[SweepRow]) -> None:
    from lensdb import catalog

    run_ids = [row.run_id for row in rows if row.run_id]
    if not run_ids:
        return
    listed = ", ".join(f"'{run_id}'" for run_id in run_ids)  # run ids are letters, digits, '.', '_', '-'
    table = catalog.query(f"SELECT run_id, count(*) AS records FROM v1.records WHERE run_id IN ({listed}) GROUP BY run_id", warehouse)
    counts = dict(zip(table.column("run_id").to_pylist(), table.column("records").to_pylist()))
    for row in rows:
        if row.run_id:
            row.records = counts.get(row.run_id, 0)


def _export(rows: list[SweepRow], warehouse: Path, export_dir: Path, options: ExtractOptions) -> None:
    """The legacy files of every model's run (done or skipped), as `lensdb export --run`."""
    from lensdb.legacy.export import export

    names = [spec.name for spec in parse_lens_specs(options.lenses)]
    lens = "norm" if "norm" in names else names[0]
    for row in rows:
        if row.run_id is None:
            continue
        try:
            row.exported = list(export(export_dir, warehouse=warehouse, run_id=row.run_id, lens=lens))
        except LensdbError as exc:
            row.status, row.note = FAILED, f"export: {exc}"


def format_table(rows: list[SweepRow]) -> str:
    """One line per model: model, run, time, records, status (a failed model's reason)."""
    header = ("model", "run", "time", "records", "status")
    lines = [
        (
            row.model,
            row.run_id or "-",
            f"{row.seconds:.1f} s" if row.seconds is not None else "-",
            f"{row.records:,}" if row.records is not None else "-",
            row.status + (f": {_cut(row.note)}" if row.note else ""),
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(4)]
    done = sum(row.status == DONE for row in rows)
    skipped = sum(row.status == SKIPPED for row in rows)
    failed = sum(row.status == FAILED for row in rows)
    text = [
        "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2].rjust(widths[2]), cells[3].rjust(widths[3]), cells[4]])
        for cells in [header, *lines]
    ]
    text.append(f"{len(rows)} models: {done} done, {skipped} skipped, {failed} failed")
    return "\n".join(text)


def _cut(note: str) -> str:
    return note if len(note) <= NOTE_WIDTH else note[: NOTE_WIDTH - 1] + "…"


def _lens_identity(spec: LensSpec, warehouse: Path) -> LensIdentity:
    """A lens as the manifest identifies it; a tuned lens by the sha256 of its params.pt (the
    tuned-lens format's content hash), read from the folder or the warehouse's lens store."""
    if spec.kind != "tuned":
        return LensIdentity(spec.name, spec.kind)
    folder = Path(spec.argument).expanduser()
    if not folder.is_dir() and not layout.is_remote(warehouse):
        folder = warehouse / TUNED_STORE_DIR / spec.argument
    params = folder / "params.pt"
    sha256 = hashlib.sha256(params.read_bytes()).hexdigest() if params.is_file() else None
    return LensIdentity(spec.name, spec.kind, sha256)


def _say(log: TextIO, text: str) -> None:
    log.write(text + "\n")
    log.flush()

