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
--          about other runs too.
--          Filters on run_id or model prune files before they are opened (DuckDB tests
--          filters on the file name against the list of files; on object storage every
--          opened file costs requests): the run id, and the model where the folder name
--          spells it (model=quote(model id)), come from the path for that reason. A model
--          id too long for a folder name is stored under a shortened name whose model only
--          the manifest holds: those runs are read apart, by globs that match no other
--          folder (nor, usually, any folder at all).
CREATE SCHEMA IF NOT EXISTS v1_base;

-- The parts of a file's path in runs/, NULL for the _schema files. One regular expression
-- each, taken as the first of all matches (none: NULL), since each costs time whenever a
-- query is planned (it is tested against every file the glob lists).
-- 'model=<key>/run=<id>':
CREATE OR REPLACE MACRO v1_base.folder_of(file_path) AS
    regexp_extract_all(file_path, '[/\\]runs[/\\](model=[^/\\]*[/\\]run=[^/\\]*)[/\\][^/\\]+[/\\][^/\\]+$', 1)[1];

CREATE OR REPLACE MACRO v1_base.run_of(file_path) AS
    regexp_extract_all(file_path, '[/\\]runs[/\\]model=[^/\\]*[/\\]run=([^/\\]*)[/\\][^/\\]+[/\\][^/\\]+$', 1)[1];

CREATE OR REPLACE MACRO v1_base.key_of(file_path) AS
    regexp_extract_all(file_path, '[/\\]runs[/\\]model=([^/\\]*)[/\\]run=[^/\\]*[/\\][^/\\]+[/\\][^/\\]+$', 1)[1];

-- Whether the folder name is a shortened key, <prefix>@<hash> (layout.model_key: a model id
-- whose quote() does not fit a folder name); quote() never leaves an '@'.
CREATE OR REPLACE MACRO v1_base.is_shortened(file_path) AS
    regexp_matches(file_path, '[/\\]runs[/\\]model=[^/\\]*@[^/\\]*[/\\]run=[^/\\]*[/\\][^/\\]+[/\\][^/\\]+$');

-- The model id that the folder name spells: its key percent-decoded (url_decode undoes
-- exactly what quote() encodes, non-ASCII UTF-8 too, and leaves '+' alone). NULL for
-- shortened keys (the pattern takes no '@') and keys that decode to no UTF-8 text.
CREATE OR REPLACE MACRO v1_base.model_of(file_path) AS
    try(url_decode(regexp_extract_all(file_path, '[/\\]runs[/\\]model=([^/\\@]+)[/\\]run=[^/\\]*[/\\][^/\\]+[/\\][^/\\]+$', 1)[1]));

-- Runs to leave out: lensdb sets the variable on its connections; other DuckDB clients get
-- the damaged runs lensdb knew of when it last wrote the catalog. A constant list, so the
-- filter prunes files by name before they are opened.
CREATE OR REPLACE MACRO v1_base.skipped(file_path) AS
    list_contains(coalesce(getvariable('lensdb_skip_runs'), {{SKIP_RUNS}}), v1_base.folder_of(file_path));

-- The manifests of the model folders that `folders` (a glob: 'model=*') matches.
CREATE OR REPLACE MACRO v1_base.manifests_in(folders) AS TABLE
SELECT *, v1_base.folder_of(filename) AS folder, v1_base.run_of(filename) AS folder_run,
       v1_base.model_of(filename) AS folder_model
FROM read_parquet('{{ROOT}}/*/' || folders || '/run=*/manifest/*.parquet', filename = true, hive_partitioning = false)
WHERE v1_base.folder_of(filename) IS NOT NULL AND NOT v1_base.skipped(filename);

CREATE OR REPLACE VIEW v1_base.manifest_files AS
SELECT * FROM v1_base.manifests_in('model=*');

-- The committed runs, in two parts that the tables below read apart. A run's folder must be
-- the one lensdb names for the manifest's model (as it must be its run's): model=<the id
-- quoted> (spelled), or for an id whose quote() is longer than a folder name allows (249,
-- layout.MODEL_KEY_MAX), a shortened name ending in '@' and the id's hash (16 hex digits).
-- So a model's runs are all in one part, and each part ranks them on its own.
-- Spelled: the model is taken from the path, so that a filter on model, which passes the
-- window (a partition column), prunes the other models' manifests by name.
-- is_latest: the run is the latest committed run of its model and prompt set (created_at,
-- then finished_at, then run_id decide). `SET VARIABLE lensdb_latest_only = true` keeps
-- only those runs, in these views and so in every view built on them (`--latest`).
CREATE OR REPLACE VIEW v1_base.committed_spelled AS
WITH committed AS (
    SELECT * REPLACE (folder_model AS model)
    FROM v1_base.manifest_files
    WHERE status = 'committed' AND run_id = folder_run
      AND folder_model IS NOT NULL AND url_encode(model) = v1_base.key_of(filename)
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY model, prompt_set
                                 ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1 AS is_latest
    FROM committed
)
SELECT * FROM ranked
WHERE is_latest OR NOT coalesce(getvariable('lensdb_latest_only'), false);

-- Shortened: the glob lists only folders with an '@' (or '_', as the _schema one, which
-- gives the columns) in their name.
CREATE OR REPLACE VIEW v1_base.committed_shortened AS
WITH committed AS (
    SELECT *
    FROM v1_base.manifests_in('model=*[@_]*')
    WHERE v1_base.is_shortened(filename) AND status = 'committed' AND run_id = folder_run
      AND length(url_encode(model)) > 249 AND ends_with(v1_base.key_of(filename), '@' || left(sha256(model), 16))
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

-- The rows of one table of the committed runs, with each row's run id and model, spelled and
-- shortened folders apart. The run id comes from the file's path, and so does the model of a
-- spelled folder, so that filters on either go into the scan, where they prune files before
-- they are opened. A spelled folder's files are kept when the folder is in the list of
-- committed ones: a test of the file name (constant for a file's rows, so it costs next to
-- nothing), where a join would hash every row. The files of shortened folders join their
-- committed runs for the model, so a model id too long for a folder name reads back whole.
CREATE OR REPLACE MACRO v1_base.run_table(table_name) AS TABLE
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), v1_base.model_of(t.filename) AS model
FROM read_parquet('{{ROOT}}/*/model=*/run=*/' || table_name || '/*.parquet', filename = true, hive_partitioning = false) t
WHERE v1_base.model_of(t.filename) IS NOT NULL AND NOT v1_base.skipped(t.filename)
  AND list_contains((SELECT list(folder) FROM v1_base.committed_spelled), v1_base.folder_of(t.filename))
UNION ALL
SELECT v1_base.run_of(t.filename) AS run_id, t.* EXCLUDE (filename), c.model
FROM read_parquet('{{ROOT}}/*/model=*[@_]*/run=*/' || table_name || '/*.parquet', filename = true, hive_partitioning = false) t
JOIN v1_base.committed_shortened c ON c.folder = v1_base.folder_of(t.filename)
WHERE v1_base.is_shortened(t.filename) AND NOT v1_base.skipped(t.filename);

CREATE OR REPLACE VIEW v1_base.prompts AS SELECT * FROM v1_base.run_table('prompts');

-- Records and residuals of both sites: post ones in records/ and residuals/, mid ones (after a
-- block's attention, before its MLP; --sites mid|all) in records_mid/ and residuals_mid/. The
-- site is the table, so that older runs' files, which have no site column, still read.
CREATE OR REPLACE VIEW v1_base.records AS
SELECT *, 'post' AS site FROM v1_base.run_table('records')
UNION ALL
SELECT *, 'mid' AS site FROM v1_base.run_table('records_mid');

CREATE OR REPLACE VIEW v1_base.finals AS SELECT * FROM v1_base.run_table('finals');

CREATE OR REPLACE VIEW v1_base.consistency AS SELECT * FROM v1_base.run_table('consistency');

CREATE OR REPLACE VIEW v1_base.residuals AS
SELECT *, 'post' AS site FROM v1_base.run_table('residuals')
UNION ALL
SELECT *, 'mid' AS site FROM v1_base.run_table('residuals_mid');

CREATE OR REPLACE VIEW v1_base.legacy_raw_lens_samples AS SELECT * FROM v1_base.run_table('legacy_raw_lens_samples');

CREATE OR REPLACE VIEW v1_base.vocab AS SELECT * FROM v1_base.run_table('vocab');

CREATE OR REPLACE VIEW v1_base.group_tokens AS SELECT * FROM v1_base.run_table('group_tokens');

CREATE OR REPLACE VIEW v1_base.token_groups AS SELECT * FROM v1_base.run_table('token_groups');

CREATE OR REPLACE VIEW v1_base.answer_tokens AS SELECT * FROM v1_base.run_table('answer_tokens');

CREATE OR REPLACE VIEW v1_base.answer_mass AS SELECT * FROM v1_base.run_table('answer_mass');

CREATE OR REPLACE VIEW v1_base.attributions AS SELECT * FROM v1_base.run_table('attributions');
