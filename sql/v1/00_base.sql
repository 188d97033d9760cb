-- view:    v1_base.* (internal)
-- version: 1
-- what:    the warehouse's Parquet tables, committed runs only. A run is committed when
--          its manifest exists (written last, then the run folder is renamed into runs/).
-- inputs:  {{WAREHOUSE}}/runs/model=*/run=*/<table>/*.parquet, plus the empty files under
--          _schema/ that give every table its columns when no run has it yet.
CREATE SCHEMA IF NOT EXISTS v1_base;

CREATE OR REPLACE VIEW v1_base.manifest AS
SELECT * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/manifest/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE status = 'committed' AND run_id = run;

CREATE OR REPLACE VIEW v1_base.prompts AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/prompts/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE run IN (SELECT run_id FROM v1_base.manifest);

CREATE OR REPLACE VIEW v1_base.records AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/records/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE run IN (SELECT run_id FROM v1_base.manifest);

CREATE OR REPLACE VIEW v1_base.finals AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/finals/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE run IN (SELECT run_id FROM v1_base.manifest);

CREATE OR REPLACE VIEW v1_base.consistency AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/consistency/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE run IN (SELECT run_id FROM v1_base.manifest);

CREATE OR REPLACE VIEW v1_base.residuals AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/residuals/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE run IN (SELECT run_id FROM v1_base.manifest);

CREATE OR REPLACE VIEW v1_base.legacy_raw_lens_samples AS
SELECT run AS run_id, * EXCLUDE (run)
FROM read_parquet('{{WAREHOUSE}}/*/model=*/run=*/legacy_raw_lens_samples/*.parquet',
                  hive_partitioning = true, union_by_name = true,
                  hive_types = {'model': VARCHAR, 'run': VARCHAR})
WHERE run IN (SELECT run_id FROM v1_base.manifest);
