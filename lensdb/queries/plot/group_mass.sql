-- what:   each tracked group's mass at the prompts' last position, per layer of one run and
--         lens (post sites): how many prompts, the mean and the standard deviation (a curve
--         and its band in `lensdb plot groups`).
-- params: $run, $lens, $variant, $prompts (a list of prompt ids, or NULL for every prompt),
--         $groups (a list of group names, or NULL for every group)
SELECT group_name AS curve, layer, count(*) AS n, avg(mass) AS mean, coalesce(stddev_samp(mass), 0) AS sd
FROM v1.token_groups
WHERE run_id = $run AND lens = $lens AND prompt_variant = $variant AND is_last_pos AND site = 'post'
  AND ($prompts IS NULL OR list_contains($prompts, prompt_id))
  AND ($groups IS NULL OR list_contains($groups, group_name))
GROUP BY ALL
