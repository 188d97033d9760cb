"""Direct computations on a warehouse's Parquet files, for checking figures and the report."""

from __future__ import annotations

import string

import duckdb


def raw(warehouse, run_id: str, table: str, sql: str = "*", where: str = "true", order: str = "1") -> list[dict]:
    """Rows of one run's table, read from its Parquet files without the views."""
    relation = duckdb.sql(
        f"SELECT {sql} FROM read_parquet('{warehouse}/runs/*/run={run_id}/{table}/*.parquet') WHERE {where} ORDER BY {order}"
    )
    return [dict(zip(relation.columns, row)) for row in relation.fetchall()]


def hand_marks(warehouse, run_id: str, prompt: str, variant: str, lens: str) -> dict[str, int | None]:
    """L_copy and L_semantic by the rules written out here: copy = p1 > 0.95, p1 - p2 > 0.10,
    the top-1 id in the prompt's context ids, the top-1 token not blank or punctuation;
    answer = gold rank 1, or without gold ids the stripped top-1 token equals the gold.
    Imported legacy runs (no token ids) keep the legacy copy flag."""
    (meta,) = raw(warehouse, run_id, "prompts", "context_ids, gold, gold_first_id",
                  f"prompt_id = '{prompt}' AND prompt_variant = '{variant}'")
    rows = raw(warehouse, run_id, "records", "layer, topk_ids, topk_tokens, topk_probs, answer_rank, legacy_copy_collapse",
               f"prompt_id = '{prompt}' AND prompt_variant = '{variant}' AND lens = '{lens}' AND is_last_pos", order="layer")

    def copies(row):
        if row["topk_ids"] is None:  # an imported legacy run: its own flag
            return bool(row["legacy_copy_collapse"])
        p = [float(x) for x in row["topk_probs"]]
        token = row["topk_tokens"][0]
        return (p[0] > 0.95 and p[0] - (p[1] if len(p) > 1 else 0.0) > 0.10 and row["topk_ids"][0] in meta["context_ids"]
                and not all(ch.isspace() or ch in string.punctuation for ch in token))

    def answers(row):
        if meta["gold_first_id"] is not None:
            return row["answer_rank"] == 1
        return meta["gold"] is not None and row["topk_tokens"][0].strip() == meta["gold"]

    return {"L_copy": next((r["layer"] for r in rows if copies(r)), None),
            "L_semantic": next((r["layer"] for r in rows if answers(r)), None)}
