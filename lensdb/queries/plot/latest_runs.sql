-- what:   the latest committed run of every model, among the runs that have the prompt and
--         the lens when they are given; by model.
-- params: $prompt (a prompt id, or NULL for any), $lens (a lens, or NULL for any)
SELECT r.* FROM v1.runs r
WHERE ($prompt IS NULL OR EXISTS (SELECT 1 FROM v1.prompts p WHERE p.run_id = r.run_id AND p.prompt_id = $prompt))
  AND ($lens IS NULL OR list_contains(r.lenses, $lens))
QUALIFY row_number() OVER (PARTITION BY r.model ORDER BY r.created_at DESC, r.finished_at DESC, r.run_id DESC) = 1
ORDER BY r.model
