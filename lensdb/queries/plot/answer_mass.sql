-- what:   the mass of the prompts' answer sets at their last position, per layer of one run
--         and lens (post sites), labelled $answer: as group_mass, for `lensdb plot groups`.
-- params: $answer (the curve's label), $run, $lens, $variant, $prompts (a list of prompt ids,
--         or NULL for every prompt)
SELECT $answer AS curve, layer, count(*) AS n, avg(mass) AS mean, coalesce(stddev_samp(mass), 0) AS sd
FROM v1.answer_mass
WHERE run_id = $run AND lens = $lens AND prompt_variant = $variant AND is_last_pos AND site = 'post'
  AND ($prompts IS NULL OR list_contains($prompts, prompt_id))
GROUP BY ALL
