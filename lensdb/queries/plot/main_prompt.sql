-- what:   the prompt a run is about: its first 'orig' prompt with role 'pos' (else with a
--         gold answer, else any) that has records of the lens at more than one position.
-- params: $run, $lens
WITH spread AS (
    SELECT prompt_id, prompt_variant, count(DISTINCT pos) AS positions FROM v1.records
    WHERE run_id = $run AND lens = $lens AND layer = 0 AND prompt_variant = 'orig'
    GROUP BY prompt_id, prompt_variant
)
SELECT p.prompt_id FROM v1.prompts p JOIN spread s USING (prompt_id, prompt_variant)
WHERE p.run_id = $run AND s.positions > 1
ORDER BY (p.role = 'pos') DESC, (p.gold IS NOT NULL) DESC, p.prompt_index
LIMIT 1
