-- view:    v1.group_tokens, v1.token_groups, v1.answer_tokens, v1.answer_mass
-- version: 1
-- what:    token groups (`lensdb extract --track NAME=WORD,...`): the tokens each tracked
--          word counts with, and per record the probability mass of each group over the
--          full next-token distribution (not the top-k), its most probable token and that
--          token's rank; and the same mass for each prompt's answer set (every accepted
--          gold answer: `gold` may be a list). A word counts with its first token in both
--          spacing variants ("word" and " word"); a token shared by two words or variants
--          counts once. Runs without --track, whose prompts have single answers, have no
--          rows here.
-- inputs:  v1_base.group_tokens, v1_base.token_groups, v1_base.answer_tokens,
--          v1_base.answer_mass, v1_base.prompts
CREATE SCHEMA IF NOT EXISTS v1;

-- columns:
--   run_id      the run
--   model       the run's model
--   group_name  the tracked group (--track NAME)
--   word        one of its words
--   variant     no_space (the word as given) or with_space (a space before it)
--   token_id    the word's first token in that variant (NULL: the word does not tokenize)
--   token       that token decoded
--   tokenized   false where the word has no token in that variant
--   source      inline, or the word file it came from
CREATE OR REPLACE VIEW v1.group_tokens AS
SELECT run_id, model, group_name, word, variant, token_id, token, tokenized, source
FROM v1_base.group_tokens;

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   role            the prompt's role
--   lens            the lens
--   layer           0 = embeddings, i = the residual after block i-1
--   site            post: the residual after the block
--   pos             token position in the prompt (0-based)
--   is_last_pos     the prompt's last position (the next-token prediction)
--   group_name      the tracked group
--   mass            total probability of the group's distinct tokens
--   best_rank       rank of its most probable token: 1 + the tokens with a larger probability (NULL: no token)
--   best_token_id   its most probable token (NULL: none of its words tokenize)
--   best_token      that token decoded
CREATE OR REPLACE VIEW v1.token_groups AS
SELECT g.run_id, g.model, g.prompt_id, g.prompt_variant, p.role, g.lens, g.layer, g.site, g.pos, g.is_last_pos,
       g.group_name, g.mass, g.best_rank, g.best_token_id, g.best_token
FROM v1_base.token_groups g
JOIN v1_base.prompts p USING (run_id, model, prompt_id, prompt_variant);

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   answer          one accepted gold answer of the prompt
--   variant         no_space or with_space
--   token_id        its first token in that variant (NULL: it does not tokenize)
--   token           that token decoded
--   tokenized       false where the answer has no token in that variant
CREATE OR REPLACE VIEW v1.answer_tokens AS
SELECT run_id, model, prompt_id, prompt_variant, answer, variant, token_id, token, tokenized
FROM v1_base.answer_tokens;

-- columns:
--   run_id          the run
--   model           the run's model
--   prompt_id       the prompt
--   prompt_variant  the prompt's variant
--   role            the prompt's role
--   lens            the lens
--   layer           0 = embeddings, i = the residual after block i-1
--   site            post: the residual after the block
--   pos             token position in the prompt (0-based)
--   is_last_pos     the prompt's last position (the next-token prediction)
--   mass            total probability of the distinct tokens of the prompt's answer set
CREATE OR REPLACE VIEW v1.answer_mass AS
SELECT a.run_id, a.model, a.prompt_id, a.prompt_variant, p.role, a.lens, a.layer, a.site, a.pos, a.is_last_pos,
       a.mass
FROM v1_base.answer_mass a
JOIN v1_base.prompts p USING (run_id, model, prompt_id, prompt_variant);
