-- what:   one prompt's records through one lens, by layer, site and position: the input token,
--         the top-k, and the figure's metric as `value` (a heatmap's cells).
-- params: $metric (p_top1 = topk_probs[1], or a column of v1.records: lensdb.plot.metrics),
--         $run, $prompt, $variant, $lens
SELECT layer, site, pos, token, token_id, CAST(COLUMNS(lambda c: c = $metric) AS DOUBLE) AS value, topk_ids, topk_tokens, topk_probs
FROM (SELECT *, topk_probs[1] AS p_top1 FROM v1.records)
WHERE run_id = $run AND prompt_id = $prompt AND prompt_variant = $variant AND lens = $lens
ORDER BY layer, pos
