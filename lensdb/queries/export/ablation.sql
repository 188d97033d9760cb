-- what:   the v1.ablation_summary row of one prompt id and lens: its first ablation variant
--         in the prompt set's order (the JSON's ablation_summary block).
-- params: $run, $lens, $id (a prompt id)
SELECT a.* FROM v1.ablation_summary a
JOIN v1.prompts p ON p.run_id = a.run_id AND p.prompt_id = a.prompt_id AND p.prompt_variant = a.ablation_variant
WHERE a.run_id = $run AND a.lens = $lens AND a.prompt_id = $id
ORDER BY p.prompt_index LIMIT 1
