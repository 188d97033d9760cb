-- what: copy-vs-semantic gap: per model and lens, how many prompts copy (L_copy), reach the
--       answer (L_semantic), and the mean gap L_semantic - L_copy where both fire.
SELECT model, lens,
       count(*) AS prompts,
       count(L_copy) AS prompts_copying,
       count(L_semantic) AS prompts_answering,
       avg(L_copy) AS mean_L_copy,
       avg(L_semantic) AS mean_L_semantic,
       avg(delta_layers) AS mean_gap_layers,
       avg(delta_layers / r.n_layers) AS mean_gap_frac
FROM v1.diagnostics d
JOIN v1.runs r USING (run_id, model)
WHERE d.gold_alignment = 'ok'
GROUP BY model, lens
ORDER BY model, lens;
