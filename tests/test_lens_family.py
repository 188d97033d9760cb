"""The lens registry (no torch), lens specs, and the writer thread the pipeline hands records to."""

from __future__ import annotations

import subprocess
import sys
import threading

import pyarrow as pa
import pytest

from lensdb.errors import LensdbError
from lensdb.lenses import KINDS, LensSpec, parse_lens_specs, reference_lens


def test_specs_are_parsed_in_order_with_aliases():
    specs = parse_lens_specs("norm, tuned:lenses/a ,raw,b=tuned:stored-lens")
    assert specs == (
        LensSpec("norm", "norm"),
        LensSpec("tuned", "tuned", "lenses/a"),
        LensSpec("raw", "raw"),
        LensSpec("tuned", "b", "stored-lens"),
    )
    assert [str(s) for s in specs] == ["norm", "tuned:lenses/a", "raw", "b=tuned:stored-lens"]
    assert parse_lens_specs(["final_ln", "final_ln"]) == (LensSpec("final_ln", "final_ln"),)


@pytest.mark.parametrize(
    "text, message",
    [
        ("norm,logit", "unknown lens logit"),
        ("tuned", "needs an argument"),
        ("raw:x", "takes no argument"),
        ("tuned:a,tuned:b", "two lenses are named 'tuned'"),
        ("1x=tuned:a", "invalid lens alias"),
        ("raw=tuned:a", "name of another lens kind"),
        (" , ", "no lens given"),
    ],
)
def test_bad_specs_are_one_line_errors(text, message):
    with pytest.raises(LensdbError, match=message):
        parse_lens_specs(text)


def test_reference_lens_is_explicit():
    specs = parse_lens_specs("raw,final_ln")
    assert reference_lens(specs) is None
    assert reference_lens(specs, "final_ln") == "final_ln"
    assert reference_lens(parse_lens_specs("raw,norm")) == "norm"
    with pytest.raises(LensdbError, match="not among the run's lenses"):
        reference_lens(specs, "norm")


def test_registry_loads_without_torch():
    probe = "import sys, lensdb.lenses; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert set(KINDS) >= {"norm", "final_ln", "raw", "tuned"}


def test_every_kind_is_a_lens_class_under_its_own_name():
    from lensdb.lenses import Lens

    assert all(issubclass(cls, Lens) and cls.kind == name and cls.summary for name, cls in KINDS.items())


class _RecordingWriter:
    def __init__(self, fail_on: int | None = None):
        self.appended = []
        self.fail_on = fail_on
        self.threads = set()

    def append(self, table, data, schema, part="part"):
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and len(self.appended) == self.fail_on:
            raise OSError(28, "No space left on device")
        self.appended.append((table, data, part))


def _job(i):
    def job():
        yield "records", pa.table({"i": [i]}), None, "part"

    return job


def test_sink_writes_in_order_on_its_own_thread():
    from lensdb.extract.sink import RecordSink

    writer = _RecordingWriter()
    with RecordSink(writer, max_pending=2) as sink:
        for i in range(20):
            sink.submit(_job(i))
        sink.close()
    assert [data["i"][0].as_py() for _, data, _ in writer.appended] == list(range(20))
    assert writer.threads == {"lensdb-writer"}


def test_sink_error_reaches_the_producer_and_stops_writing():
    from lensdb.extract.sink import RecordSink

    writer = _RecordingWriter(fail_on=3)
    with pytest.raises(OSError, match="No space"):
        with RecordSink(writer, max_pending=2) as sink:
            for i in range(50):
                sink.submit(_job(i))
            sink.close()
    assert len(writer.appended) == 3, "nothing is written after the first error"


def _imports(path, modules) -> set[str]:
    """The lensdb modules a file imports, at its top or inside functions (`from P import M`:
    the module P.M when there is one, else P)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
    return {name for name in found if name in modules}


def test_the_lens_family_and_tuned_lenses_import_each_other_one_way():
    """lensdb/lenses builds a tuned lens from lensdb/tuned's files; nothing in lensdb/tuned that
    the lenses import reaches back into lensdb/lenses (function-level imports included)."""
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "lensdb"
    modules = {".".join(("lensdb", *p.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"): p for p in package.rglob("*.py")}
    reached, frontier = set(), {name for name in modules if name.startswith("lensdb.lenses")}
    while frontier:  # every lensdb module the lens package reaches, transitively
        name = frontier.pop()
        reached.add(name)
        frontier |= {m for m in _imports(modules[name], modules) if m not in reached and not m.startswith("lensdb.lenses")}
    assert {"lensdb.tuned.store", "lensdb.tuned.format"} <= reached
    back = sorted(name for name in reached if not name.startswith("lensdb.lenses") and any(m.startswith("lensdb.lenses") for m in _imports(modules[name], modules)))
    assert back == [], f"{back} import the lens package, which imports them"
