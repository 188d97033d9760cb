-- what:   one prompt's direct logit attribution to one target token at its last position,
--         per layer (0: the embedding; i: block i-1's attention and MLP) with the running total.
-- params: $run, $prompt, $variant, $target (top1, gold or group), $group (a group name, or NULL)
SELECT layer, attn, mlp, embed, cumulative, logit, logit_offset, token, token_id
FROM v1.attribution_by_layer
WHERE run_id = $run AND prompt_id = $prompt AND prompt_variant = $variant AND target = $target
  AND group_name IS NOT DISTINCT FROM $group
ORDER BY layer
