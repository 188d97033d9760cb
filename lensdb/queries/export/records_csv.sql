-- what:   the records CSV's rows: every record of the run's 'pos' prompts of one variant
--         through one lens at post sites (the legacy files know no other), with the rest mass beyond the narrow and the wide top-k.
-- params: $run, $lens, $role ('pos'), $variant ('orig'), $narrow_k, $wide_k (lensdb.legacy.format)
SELECT r.prompt_id, r.prompt_variant, r.layer, r.pos, r.token, r.entropy_bits, r.is_last_pos,
       r.topk_tokens, r.topk_probs,
       v1.rest_mass(list_slice(r.topk_probs, 1, $narrow_k)) AS rest_mass_narrow,
       v1.rest_mass(list_slice(r.topk_probs, 1, $wide_k)) AS rest_mass_wide
FROM v1.records r
JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE r.run_id = $run AND r.lens = $lens AND r.site = 'post' AND p.role = $role AND p.prompt_variant = $variant
ORDER BY p.prompt_index, r.layer, r.pos
