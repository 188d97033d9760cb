-- what:   a metric at the prompts' last position, per layer and site of one run and lens (mid before post): how many
--         prompts have it, its median and the $low and $high quantiles (a curve and its band).
-- params: $metric (a column of v1.pure_next_token: lensdb.plot.metrics), $run, $lens,
--         $variant, $prompts (a list of prompt ids, or NULL for every prompt), $low, $high
WITH v AS (
    SELECT layer, site, CAST(COLUMNS(lambda c: c = $metric) AS DOUBLE) AS value FROM v1.pure_next_token
    WHERE run_id = $run AND lens = $lens AND prompt_variant = $variant
      AND ($prompts IS NULL OR list_contains($prompts, prompt_id))
)
SELECT layer, site, count(value) AS n,
       quantile_cont(value, 0.5) AS median,
       quantile_cont(value, $low) AS low,
       quantile_cont(value, $high) AS high
FROM v GROUP BY layer, site ORDER BY layer, site = 'post'
