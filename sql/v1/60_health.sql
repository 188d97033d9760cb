-- view:    v1.damaged_runs
-- version: 1
-- what:    run folders in runs/ that lensdb leaves out of every view, one row each: the
--          model, run id, folder (relative to the warehouse) and why, in one line (manifest
--          missing or unreadable or naming another run or model, a Parquet file whose footer
--          or data cannot be read). lensdb.connect and lensdb query fill it when they open the
--          warehouse (and add runs whose files fail during a query); other DuckDB clients see
--          the runs lensdb found damaged when it last wrote the catalog.
-- inputs:  getvariable('lensdb_damaged_runs'), set by lensdb (lensdb/warehouse/health.py)
CREATE SCHEMA IF NOT EXISTS v1;

-- columns:
--   model     the model id (decoded from the run's model= folder)
--   run_id    the run id (from the run= folder)
--   folder    the run folder relative to the warehouse (runs/model=<key>/run=<id>)
--   reason    why the run is left out, in one line
CREATE OR REPLACE VIEW v1.damaged_runs AS
SELECT damaged.model, damaged.run_id, damaged.folder, damaged.reason
FROM (SELECT unnest(coalesce(getvariable('lensdb_damaged_runs'), {{DAMAGED_RUNS}})) AS damaged);
