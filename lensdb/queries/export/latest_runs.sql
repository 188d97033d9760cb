-- what:   the latest committed run of every model, or of one model (its full id, or the
--         part after its last '/'); by model.
-- params: $model (or NULL for every model)
SELECT * FROM v1.runs
WHERE $model IS NULL OR $model IN (model, string_split(model, '/')[-1])
QUALIFY row_number() OVER (PARTITION BY model ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1
ORDER BY model
