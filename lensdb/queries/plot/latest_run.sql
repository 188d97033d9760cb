-- what:   the committed runs of a model (its full id, or the part after its last '/'), the
--         latest first; only those that have the prompt when one is given.
-- params: $model, $prompt (a prompt id, or NULL for any)
SELECT r.* FROM v1.runs r
WHERE $model IN (r.model, string_split(r.model, '/')[-1])
  AND ($prompt IS NULL OR EXISTS (SELECT 1 FROM v1.prompts p WHERE p.run_id = r.run_id AND p.prompt_id = $prompt))
ORDER BY r.created_at DESC, r.finished_at DESC, r.run_id DESC
