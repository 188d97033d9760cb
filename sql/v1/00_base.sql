-- view:    v1_base.* (internal)
-- version: 1
-- what:    the warehouse's Parquet tables, committed runs only. A run is committed when
--          its manifest exists (written last, then the run folder is renamed into runs/)
--          and names the folder's run and model. Runs that lensdb found damaged
--          (getvariable('lensdb_skip_runs'), set by lensdb.connect / lensdb query; see
--          v1.damaged_runs) are left out of every table.
-- inputs:  {{ROOT}}/runs/model=*/run=*/<table>/*.parquet, plus the empty files under
--          {{ROOT}}/_schema/ that give every table its columns when no run has it yet.
--          {{ROOT}} is the warehouse folder (glob characters escaped), or a folder linking
--          to it when the warehouse's own path cannot be a glob. The model and run of a
--          row come from its file's path, read from the end, so nothing in the warehouse's
--          path (an '=', say) becomes a column. Columns are matched by name against the
--          first file (the _schema one), not with union_by_name, which reads every file's
--          footer whenever a query is planned: then one corrupt file would break queries
--          about other runs too. Filters on run_id or model prune files before they are
--          opened (DuckDB tests filters on the file name against the file list), which on
--          object storage saves requests: the run and, unless the folder name is a
--          shortened one, the model come from the path for that reason.
CREATE SCHEMA IF NOT EXISTS v1_base;

-- 'model=<key>/run=<id>' of a file in runs/ (NULL for the _schema files).
CREATE OR REPLACE MACRO v1_base.folder_of(file_path) AS
    nullif(regexp_extract(file_path, '[/\\]runs[/\\](model=[^/\\]*[/\\]run=[^/\\]*)[/\\][^/\\]+[/\\][^/\\]+$', 1), '');

CREATE OR REPLACE MACRO v1_base.run_of(file_path) AS
    nullif(regexp_extract(file_path, '[/\\]runs[/\\]model=[^/\\]*[/\\]run=([^/\\]*)[/\\][^/\\]+[/\\][^/\\]+$', 1), '');

-- The <key> of the model=<key> folder of a file in runs/ (NULL for the _schema files).
CREATE OR REPLACE MACRO v1_base.key_of(file_path) AS
    nullif(regexp_extract(file_path, '[/\\]runs[/\\]model=([^/\\]*)[/\\]run=[^/\\]*[/\\][^/\\]+[/\\][^/\\]+$', 1), '');

-- A key that lensdb shortened (a model id too long for a folder name: <prefix>@<hash>, see
-- layout.model_key); its model id is only in the manifest. quote() never leaves an '@'.
CREATE OR REPLACE MACRO v1_base.is_shortened(file_path) AS
    contains(v1_base.key_of(file_path), '@');

-- The model id that the file's folder spells: its key percent-decoded (the folder is named
-- quote(model id); url_decode undoes exactly that, and leaves '+' alone). NULL for shortened
-- keys, and for keys that decode to no UTF-8 text (no lensdb folder; lensdb reports them).
CREATE OR REPLACE MACRO v1_base.model_of(file_path) AS
    CASE WHEN NOT v1_base.is_shortened(file_path) THEN try(url_decode(v1_base.key_of(file_path))) END;

-- Runs to leave out: lensdb sets the variable on its connections; other DuckDB clients get
-- the damaged runs lensdb knew of when it last wrote the catalog. A constant list, so the
-- filter prunes files by name before they are opened.
CREATE OR REPLACE MACRO v1_base.skipped(file_path) AS
    list_contains(coalesce(getvariable('lensdb_skip_runs'), {{SKIP_RUNS}}), v1_base.folder_of(file_path));

CREATE OR REPLACE VIEW v1_base.manifest_files AS
SELECT *, v1_base.folder_of(filename) AS folder, v1_base.run_of(filename) AS folder_run,
       v1_base.model_of(filename) AS folder_model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/manifest/*.parquet',
                  filename = true, hive_partitioning = false)
WHERE v1_base.folder_of(filename) IS NOT NULL AND NOT v1_base.skipped(filename);

-- The committed runs, in two parts that the views below read apart: the runs whose folder
-- spells their model (the manifest must name that model), with the model taken from the
-- path, so that a filter on model prunes the other models' manifests by name; and the runs
-- of shortened folders, with the model from the manifest (their scan prunes every other
-- manifest). lensdb writes every run of a model into the one folder model_key(model)
-- names, so the two parts never share a model, and each ranks its runs on its own.
-- is_latest: the run is the latest committed run of its model and prompt set (created_at,
-- then finished_at, then run_id decide). `SET VARIABLE lensdb_latest_only = true` keeps
-- only those runs, in these views and so in every view built on them (`--latest`). A filter
-- on model passes the window (model is a partition column) down to the manifests' scan.
CREATE OR REPLACE VIEW v1_base.committed_spelled AS
WITH committed AS (
    SELECT * REPLACE (folder_model AS model)
    FROM v1_base.manifest_files
    WHERE status = 'committed' AND run_id = folder_run AND model = folder_model AND NOT v1_base.is_shortened(filename)
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, prompt_set
                                 ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1 AS is_latest
    FROM committed
)
SELECT * FROM ranked
WHERE is_latest OR NOT coalesce(getvariable('lensdb_latest_only'), false);

CREATE OR REPLACE VIEW v1_base.committed_shortened AS
WITH committed AS (
    SELECT *
    FROM v1_base.manifest_files
    WHERE status = 'committed' AND run_id = folder_run AND v1_base.is_shortened(filename)
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, prompt_set
                                 ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1 AS is_latest
    FROM committed
)
SELECT * FROM ranked
WHERE is_latest OR NOT coalesce(getvariable('lensdb_latest_only'), false);

CREATE OR REPLACE VIEW v1_base.committed_manifest AS
SELECT * FROM v1_base.committed_spelled
UNION ALL
SELECT * FROM v1_base.committed_shortened;

CREATE OR REPLACE VIEW v1_base.manifest AS
SELECT * EXCLUDE (filename, folder, folder_run, folder_model)
FROM v1_base.committed_manifest;

-- The rows of one table of the committed runs, with each row's run id and model: its files
-- joined to the committed run folders (hash joins with the few committed runs on the build
-- side), spelled and shortened folders apart. The run id comes from the file's path, and so
-- does the model of a spelled folder, so that filters on either go below the join into the
-- scan, where they prune files before they are opened; the join's model equality carries a
-- filter on model to the manifests too. The files of shortened folders (usually none) take
-- the model from the manifest, so a model id too long for one folder name reads back whole.
CREATE OR REPLACE MACRO v1_base.run_table(table_name) AS TABLE
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), v1_base.model_of(t.filename) AS model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/' || table_name || '/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed_spelled c ON c.folder = v1_base.folder_of(t.filename) AND c.model = v1_base.model_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename) AND NOT v1_base.is_shortened(t.filename)
UNION ALL
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/' || table_name || '/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed_shortened c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.folder_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename) AND v1_base.is_shortened(t.filename);

CREATE OR REPLACE VIEW v1_base.prompts AS SELECT * FROM v1_base.run_table('prompts');

CREATE OR REPLACE VIEW v1_base.records AS SELECT * FROM v1_base.run_table('records');

CREATE OR REPLACE VIEW v1_base.finals AS SELECT * FROM v1_base.run_table('finals');

CREATE OR REPLACE VIEW v1_base.consistency AS SELECT * FROM v1_base.run_table('consistency');

CREATE OR REPLACE VIEW v1_base.residuals AS SELECT * FROM v1_base.run_table('residuals');

CREATE OR REPLACE VIEW v1_base.legacy_raw_lens_samples AS SELECT * FROM v1_base.run_table('legacy_raw_lens_samples');

CREATE OR REPLACE VIEW v1_base.vocab AS SELECT * FROM v1_base.run_table('vocab');
