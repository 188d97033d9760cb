-- what: per-layer curves at the next-token position: mean entropy, KL to the final
--       distribution, answer probability and rank, per model, run and lens.
--       Per site too: post, and mid (between layers) in runs with --sites mid|all.
SELECT model, run_id, lens, layer, site,
       count(*) AS prompts,
       avg(entropy_bits) AS mean_entropy_bits,
       avg(kl_to_final_bits) AS mean_kl_to_final_bits,
       avg(p_answer) AS mean_p_answer,
       median(answer_rank) AS median_answer_rank,
       avg(CASE WHEN is_answer THEN 1.0 ELSE 0.0 END) FILTER (WHERE is_answer IS NOT NULL) AS answer_top1_rate
FROM v1.pure_next_token
GROUP BY model, run_id, lens, layer, site
ORDER BY model, run_id, lens, layer, site = 'post';
