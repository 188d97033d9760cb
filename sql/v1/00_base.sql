-- view:    v1_base.* (internal)
-- version: 1
-- what:    the warehouse's Parquet tables, committed runs only. A run is committed when
--          its manifest exists (written last, then the run folder is renamed into runs/).
--          Runs that lensdb found damaged (getvariable('lensdb_skip_runs'), set by
--          lensdb.connect / lensdb query; see v1.damaged_runs) are left out of every table.
-- inputs:  {{ROOT}}/runs/model=*/run=*/<table>/*.parquet, plus the empty files under
--          {{ROOT}}/_schema/ that give every table its columns when no run has it yet.
--          {{ROOT}} is the warehouse folder (glob characters escaped), or a folder linking
--          to it when the warehouse's own path cannot be a glob. The model and run of a
--          row come from its file's path, read from the end, so nothing in the warehouse's
--          path (an '=', say) becomes a column. Columns are matched by name against the
--          first file (the _schema one), not with union_by_name, which reads every file's
--          footer whenever a query is planned: then one corrupt file would break queries
--          about other runs too. Filters on run_id prune files before they are opened.
CREATE SCHEMA IF NOT EXISTS v1_base;

-- 'model=<key>/run=<id>' of a file in runs/ (NULL for the _schema files).
CREATE OR REPLACE MACRO v1_base.folder_of(file_path) AS
    nullif(regexp_extract(file_path, '[/\\]runs[/\\](model=[^/\\]*[/\\]run=[^/\\]*)[/\\][^/\\]+[/\\][^/\\]+$', 1), '');

CREATE OR REPLACE MACRO v1_base.run_of(file_path) AS
    nullif(regexp_extract(file_path, '[/\\]runs[/\\]model=[^/\\]*[/\\]run=([^/\\]*)[/\\][^/\\]+[/\\][^/\\]+$', 1), '');

-- Runs to leave out: lensdb sets the variable on its connections; other DuckDB clients get
-- the damaged runs lensdb knew of when it last wrote the catalog. A constant list, so the
-- filter prunes files by name before they are opened.
CREATE OR REPLACE MACRO v1_base.skipped(file_path) AS
    list_contains(coalesce(getvariable('lensdb_skip_runs'), {{SKIP_RUNS}}), v1_base.folder_of(file_path));

CREATE OR REPLACE VIEW v1_base.manifest_files AS
SELECT *, v1_base.folder_of(filename) AS folder, v1_base.run_of(filename) AS folder_run
FROM read_parquet('{{ROOT}}/*/model=*/run=*/manifest/*.parquet',
                  filename = true, hive_partitioning = false)
WHERE v1_base.folder_of(filename) IS NOT NULL AND NOT v1_base.skipped(filename);

-- is_latest: the run is the latest committed run of its model and prompt set (created_at,
-- then finished_at, then run_id decide). `SET VARIABLE lensdb_latest_only = true` keeps
-- only those runs, in this view and so in every view built on it (`--latest`).
CREATE OR REPLACE VIEW v1_base.committed_manifest AS
WITH committed AS (
    SELECT *
    FROM v1_base.manifest_files
    WHERE status = 'committed' AND run_id = folder_run
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, prompt_set
                                 ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1 AS is_latest
    FROM committed
)
SELECT * FROM ranked
WHERE is_latest OR NOT coalesce(getvariable('lensdb_latest_only'), false);

CREATE OR REPLACE VIEW v1_base.manifest AS
SELECT * EXCLUDE (filename, folder, folder_run)
FROM v1_base.committed_manifest;

-- The committed run folders the tables below read, with their model: from the manifest, so
-- that a model id too long for one folder name (stored under a shortened name) reads back whole.
CREATE OR REPLACE VIEW v1_base.committed AS
SELECT folder, run_id, model
FROM v1_base.committed_manifest;

-- The tables below join their rows to the committed run folders (a hash join with the few
-- committed runs on the build side). Filters on run_id go below the join into the scan,
-- where they prune files before they are opened.
CREATE OR REPLACE VIEW v1_base.prompts AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/prompts/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.records AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/records/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.finals AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/finals/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.consistency AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/consistency/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.residuals AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/residuals/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.legacy_raw_lens_samples AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/legacy_raw_lens_samples/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.vocab AS
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/vocab/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename);
