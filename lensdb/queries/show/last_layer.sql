-- what: `lensdb show RUN`: per lens, the last layer against the model head: prompts above
--       0.5 bits of KL, the largest KL, and prompts whose top-1 token differs.
SELECT lens, count(*) AS prompts,
       count(*) FILTER (WHERE warn_high_last_layer_kl) AS kl_above_0_5_bits,
       max(kl_to_final_bits) AS max_kl_bits,
       count(*) FILTER (WHERE NOT top1_agree) AS top1_disagrees
FROM v1.last_layer_consistency WHERE run_id = $run
GROUP BY lens ORDER BY lens
