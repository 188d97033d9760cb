-- view:    v1.attributions, v1.attribution_by_layer
-- version: 1
-- what:    direct logit attribution (`lensdb extract --attribution`): for every prompt,
--          position and target token (the gold first token, the model's own top-1 token at
--          that position, and each tracked group's most probable final token), the
--          contribution of the embedding and of every block's attention and MLP to the
--          token's logit: what the component adds to the residual stream (attention: the
--          residual after attention minus the one before, post-attention norms included;
--          MLP: the rest of the block's update; parallel blocks: their output hooks), read
--          through the final norm with its scale frozen at the last layer. Per (prompt,
--          position, target) the contributions add up to logit - logit_offset (logit_offset: the final
--          norm's bias and the unembedding's bias for the token; Gemma-2's softcap comes
--          after the logit).
-- inputs:  v1_base.attributions, v1_base.prompts
CREATE SCHEMA IF NOT EXISTS v1;

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   role            the prompt's role
--   pos             token position in the prompt (0-based)
--   is_last_pos     the prompt's last position (the next-token prediction)
--   target          gold, top1 (the model's own most probable token here) or group
--   group_name      for target group: the tracked group whose most probable final token it is
--   token_id        the target token
--   token           that token decoded
--   component       embed, attn or mlp
--   block           the block of attn / mlp (0-based; NULL for embed)
--   layer           where it lands: 0 for embed, block + 1 for attn and mlp (as records count layers)
--   contribution    its direct contribution to the token's logit
--   logit           the token's logit through the final norm at the last layer (before any softcap)
--   logit_offset    final-norm bias and unembedding bias term: logit - logit_offset = sum of contributions
CREATE OR REPLACE VIEW v1.attributions AS
SELECT a.run_id, a.model, a.prompt_id, a.prompt_variant, p.role, a.pos, a.is_last_pos, a.target, a.group_name,
       a.token_id, a.token, a.component, a.block, a.layer, a.contribution, a.logit, a.logit_offset
FROM v1_base.attributions a
JOIN v1_base.prompts p USING (run_id, model, prompt_id, prompt_variant);

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   target          gold, top1 or group
--   group_name      for target group: the tracked group
--   token_id        the target token
--   token           that token decoded
--   layer           0 (the embedding) or a block's number + 1
--   attn            the block's attention contribution (NULL at layer 0)
--   mlp             the block's MLP contribution (NULL at layer 0)
--   embed           the embedding's contribution (layer 0 only)
--   cumulative      sum of every contribution up to and including this layer
--   logit           the token's final logit (before any softcap)
--   logit_offset    the part of the logit no component writes
CREATE OR REPLACE VIEW v1.attribution_by_layer AS
SELECT run_id, model, prompt_id, prompt_variant, target, group_name, token_id, token, layer,
       sum(contribution) FILTER (WHERE component = 'attn') AS attn,
       sum(contribution) FILTER (WHERE component = 'mlp') AS mlp,
       sum(contribution) FILTER (WHERE component = 'embed') AS embed,
       sum(sum(contribution)) OVER (PARTITION BY run_id, model, prompt_id, prompt_variant, target, group_name ORDER BY layer) AS cumulative,
       any_value(logit) AS logit, any_value(logit_offset) AS logit_offset
FROM v1_base.attributions
WHERE is_last_pos
GROUP BY run_id, model, prompt_id, prompt_variant, target, group_name, token_id, token, layer;
