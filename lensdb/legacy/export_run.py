"""What `lensdb export` reads once about a run (ExportRun), shared by the CSV writer
(lensdb.legacy.export) and the JSON builders (lensdb.legacy.export_json)."""

from __future__ import annotations

from dataclasses import dataclass

from lensdb import queries
from lensdb.errors import WarehouseError
from lensdb.legacy import format as fmt


@dataclass
class ExportRun:
    """What the export reads once about a run: its manifest, the prompts the JSON describes (`primary`,
    its `control`) and the final predictions."""

    con: object
    manifest: dict
    lens: str
    primary: dict
    control: dict | None
    finals: list[dict]

    @classmethod
    def load(cls, con, manifest: dict, lens: str) -> "ExportRun":
        run_id = manifest["run_id"]
        if lens not in (manifest["lenses"] or []):
            raise WarehouseError(f"run {run_id} has no {lens!r} lens (it has {', '.join(manifest['lenses'] or [])})")
        prompts = queries.rows(con, "export/prompts", run=run_id)
        primary = next((p for p in prompts if p["role"] == fmt.POS_ROLE and p["prompt_variant"] == fmt.ORIG_VARIANT), None)
        if primary is None:
            raise WarehouseError(f"run {run_id} has no prompt with role 'pos' and variant 'orig', which the legacy files describe")
        control = next(
            (p for p in prompts if p["control_of"] == primary["prompt_id"] and p["paired_variant"] == primary["prompt_variant"]),
            None,
        )
        finals = queries.rows(con, "export/final_predictions", run=run_id)
        return cls(con=con, manifest=manifest, lens=lens, primary=primary, control=control, finals=finals)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def blocks(self) -> tuple[str, ...]:
        """The JSON blocks to write: an imported file's own, else all."""
        recorded = self.manifest["legacy_blocks"]
        return tuple(recorded) if recorded is not None else (*fmt.JSON_BLOCKS, fmt.LAST_LAYER_BLOCK)

    def rows(self, query: str, **params) -> list[dict]:
        """The rows of the named query `query` (lensdb/queries/QUERY.sql) for this run."""
        return queries.rows(self.con, query, run=self.run_id, **params)

    def row(self, query: str, **params) -> dict | None:
        found = self.rows(query, **params)
        return found[0] if found else None

    def of_prompt(self, query: str, prompt: dict, *, lens: bool = True) -> dict | None:
        """The row of a per-prompt query for `prompt` (and the export's lens)."""
        extra = {"lens": self.lens} if lens else {}
        return self.row(query, id=prompt["prompt_id"], variant=prompt["prompt_variant"], **extra)
