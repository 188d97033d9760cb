-- view:    v1_base.* (internal)
-- version: 1
-- what:    the warehouse's Parquet tables, committed runs only. A run is committed when
--          its manifest exists (written last, then the run folder is renamed into runs/).
-- inputs:  {{WAREHOUSE}}/runs/model=*/run=*/<table>/*.parquet, plus the empty files under
--          _schema/ that give every table its columns when no run has it yet.
--          Columns are matched by name against the first file (the _schema one), not with
--          union_by_name, which reads every file's footer whenever a query is planned: then
--          one corrupt file would break queries about other runs too.
CREATE SCHEMA IF NOT EXISTS v1_base;

-- is_latest: the run is the latest committed run of its model and prompt set (created_at,
-- then finished_at, then run_id decide). `SET VARIABLE lensdb_latest_only = true` keeps
-- only those runs, in this view and so in every view built on it (`--latest`).
CREATE OR REPLACE VIEW v1_base.manifest AS
WITH committed AS (
    SELECT * EXCLUDE (run)
    FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/manifest/*.parquet',
                      hive_partitioning = true, union_by_name = true,
                      hive_types = {'model': VARCHAR, 'run': VARCHAR})
    WHERE status = 'committed' AND run_id = run
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, prompt_set
                                 ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1 AS is_latest
    FROM committed
)
SELECT * FROM ranked
WHERE is_latest OR NOT coalesce(getvariable('lensdb_latest_only'), false);

-- The tables below keep the rows of committed runs with list_contains on the manifests' run
-- ids rather than `run IN (SELECT ...)`: for that semi join DuckDB builds its hash table on
-- the (wide) table side, whose size it estimates from the empty _schema file as ~0 rows.
CREATE OR REPLACE VIEW v1_base.prompts AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/prompts/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);

CREATE OR REPLACE VIEW v1_base.records AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/records/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);

CREATE OR REPLACE VIEW v1_base.finals AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/finals/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);

CREATE OR REPLACE VIEW v1_base.consistency AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/consistency/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);

CREATE OR REPLACE VIEW v1_base.residuals AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/residuals/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);

CREATE OR REPLACE VIEW v1_base.legacy_raw_lens_samples AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/legacy_raw_lens_samples/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);

CREATE OR REPLACE VIEW v1_base.vocab AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/vocab/*.parquet',
                  hive_partitioning = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE list_contains((SELECT list(run_id) FROM v1_base.manifest), run);
