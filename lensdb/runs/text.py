"""The runs as people and scripts read them: `lensdb runs` tables, `lensdb show` text and JSON."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pyarrow as pa

from lensdb.runs.details import RunDetails
from lensdb.runs.listing import RunInfo, human_size
from lensdb.warehouse.base import LeftoverInfo


def runs_table(runs: list[RunInfo], *, for_humans: bool = True) -> pa.Table:
    """The listing as an Arrow table. For people the columns most worth a narrow terminal come
    first and `size` is text; for scripts `bytes_on_disk` and `path` instead."""
    columns: list[tuple[str, pa.DataType]] = [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("prompt_set", pa.string()),
        ("prompts", pa.int64()),
        ("records", pa.int64()),
    ]
    if for_humans:
        columns += [("size", pa.string()), ("created_at", pa.timestamp("s")), ("source", pa.string()), ("damaged", pa.string())]
    else:
        columns += [("bytes_on_disk", pa.int64()), ("created_at", pa.timestamp("s")), ("source", pa.string()), ("damaged", pa.string()), ("path", pa.string())]
    rows = [
        {
            "run_id": run.run_id,
            "model": run.model,
            "status": run.status,
            "prompt_set": run.prompt_set,
            "prompts": run.prompts,
            "records": run.records,
            "size": run.size,
            "bytes_on_disk": run.bytes_on_disk,
            "created_at": run.created_at,
            "source": run.source,
            "damaged": (run.damaged or "") if for_humans else run.damaged,
            "path": str(run.path),
        }
        for run in runs
    ]
    return pa.Table.from_pylist(rows, schema=pa.schema(columns))


def details_as_dict(details: RunDetails) -> dict:
    info = asdict(details.info) | {"path": str(details.info.path)}
    return {
        "run": info,
        "manifest": details.manifest,
        "tables": {name: asdict(stats) for name, stats in details.tables.items()},
        "diagnostics": details.diagnostics,
        "last_layer": details.last_layer,
        "raw_lens": details.raw_lens,
        "note": details.note,
    }


def format_details(details: RunDetails, width: int | None = None) -> str:
    """`lensdb show` as text: the run, its settings and versions, tables, then the diagnostics tables."""
    from lensdb.output import render_table

    info, m = details.info, details.manifest or {}
    lines = [f"run          {info.run_id}"]
    lines.append(f"model        {info.model}" + _joined(m, "model_revision", "model_class", "architecture"))
    if m:
        shape = ", ".join(f"{key} {m[key]:,}" for key in ("n_layers", "d_model", "n_heads", "d_vocab", "n_ctx") if m.get(key) is not None)
        if shape:
            lines.append(f"             {shape}")
    lines.append(f"status       {info.status}" + (f": {info.damaged}" if info.damaged else "") + (f"   source {info.source}" if info.source else ""))
    if m.get("created_at"):
        finished = f"   finished {m['finished_at']:%Y-%m-%d %H:%M:%S}" if m.get("finished_at") else ""
        lines.append(f"created      {m['created_at']:%Y-%m-%d %H:%M:%S} UTC{finished}")
    if m:
        prompt_set = m.get("prompt_set") or "?"
        sha = f" (sha256 {m['prompt_set_sha256'][:12]})" if m.get("prompt_set_sha256") else ""
        lines.append(f"prompt set   {prompt_set}{sha}, {_count(info.prompts)} prompts")
        settings = [
            f"lenses {','.join(m.get('lenses') or [])}",
            f"top-k {m.get('top_k')}",
            f"dtype {m.get('dtype')}",
            f"device {m.get('device')}",
            f"seed {m.get('seed')}",
        ]
        lines.append("settings     " + ", ".join(s for s in settings if not s.endswith(" None")))
        versions = [
            f"{name} {m.get(key)}"
            for name, key in (("lensdb", "lensdb_version"), ("torch", "torch_version"), ("transformers", "transformers_version"), ("transformer-lens", "transformer_lens_version"))
            if m.get(key)
        ]
        lines.append("versions     " + ", ".join(versions))
        if m.get("last_layer_max_kl_bits") is not None:
            check = "FLAGGED" if m.get("last_layer_flagged") else "ok"
            agreement = m.get("last_layer_top1_agreement")
            agree = f", top-1 agreement {agreement:.2f}" if agreement is not None else ""
            lines.append(f"last layer   final_ln vs head: max KL {m['last_layer_max_kl_bits']:.2e} bits{agree}, {check}")
        if m.get("source_files_sha256"):
            lines.append(f"imported     files sha256 {m['source_files_sha256'][:12]}")
    lines.append(f"path         {shown_path(info.path)}  ({info.size})")
    table_parts = [f"{name} {_count(stats.rows)}" for name, stats in details.tables.items()]
    lines.append("rows         " + ", ".join(table_parts))
    text = "\n".join(lines) + "\n"
    if details.diagnostics:
        text += (
            "\nDiagnostics (v1.diagnostics): layers are medians over the prompts; answered / copied:\n"
            "prompts with an L_semantic / L_copy; kl_below_1: first_kl_below_1_0; rank_le_5: first_rank_le_5\n"
        ) + render_table(_table(details.diagnostics), width, types=False)
    if details.last_layer:
        text += "\nLast layer vs the model head (v1.last_layer_consistency):\n" + render_table(_table(details.last_layer), width, types=False)
    if details.raw_lens:
        risks = ", ".join(f"{row['prompts']:,} {row['risk']}" for row in details.raw_lens)
        text += f"\nRaw-lens artifact risk (v1.raw_lens_summary): prompts {risks}\n"
    if details.note:
        text += f"\n{details.note}\n"
    return text


def _joined(manifest: dict, *keys: str) -> str:
    parts = [str(manifest[key]) for key in keys if manifest.get(key)]
    return f"  ({', '.join(parts)})" if parts else ""


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def shown_path(path: Path) -> str:
    """Relative to the working directory when inside it (as the user named the warehouse), else absolute."""
    try:
        return str(Path(path).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def leftovers_table(found: list[LeftoverInfo]) -> pa.Table:
    rows = [
        {
            "kind": left.kind,
            "run_id": left.run_id,
            "model": left.model,
            "files": left.files,
            "size": human_size(left.bytes_on_disk),
            "age": _age(left.age_seconds),
            "removable": left.removable,
            "location": left.location,
        }
        for left in found
    ]
    schema = pa.schema(
        [("kind", pa.string()), ("run_id", pa.string()), ("model", pa.string()), ("files", pa.int64()), ("size", pa.string()),
         ("age", pa.string()), ("removable", pa.bool_()), ("location", pa.string())]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} s"
