-- what: `lensdb show RUN`: the run's diagnostics per lens and role, layers as medians over
--       its prompts; answered / copied: prompts with an L_semantic / L_copy.
SELECT lens, role, count(*) AS prompts,
       count(L_semantic) AS answered, median(L_semantic) AS L_semantic,
       count(L_copy) AS copied, median(L_copy) AS L_copy,
       median(first_kl_below_1_0) AS kl_below_1, median(first_rank_le_5) AS rank_le_5
FROM v1.diagnostics WHERE run_id = $run
GROUP BY lens, role ORDER BY lens, role
