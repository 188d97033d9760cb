-- what: how well each lens of a run reads each layer: the mean, median and 90th
--       percentile of KL to the model's final distribution (bits) over every position of
--       every prompt, per model, run, lens and layer. Lower is a better lens; a tuned lens
--       should sit below final_ln at every layer but the last (there the two are one map).
--       Per site too: post, and mid (between layers) in runs with --sites mid|all.
SELECT model, run_id, lens, layer, site,
       count(*) AS positions,
       avg(kl_to_final_bits) AS mean_kl_to_final_bits,
       median(kl_to_final_bits) AS median_kl_to_final_bits,
       quantile_cont(kl_to_final_bits, 0.9) AS p90_kl_to_final_bits
FROM v1.records
GROUP BY model, run_id, lens, layer, site
ORDER BY model, run_id, lens, layer, site = 'post';
