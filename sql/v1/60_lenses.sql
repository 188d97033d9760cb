-- view:    v1.lenses
-- version: 1
-- what:    tuned lenses stored in the warehouse (`lensdb train-lens --name`), one row per
--          lens x layer (0..n_layers; the last layer's translator is the identity) x site
--          (post; with `train-lens --sites all` also mid, layers 1..n_layers): the
--          training settings, and the mean KL(model's final distribution || lens) in bits
--          on the held-out end of the corpus of the tuned lens (kl_bits) and of the
--          final_ln logit lens (final_ln_kl_bits), and over the last training step
--          (train_kl_bits; NULL at the last layer, which is not trained). Use a stored
--          lens with `lensdb extract --lens tuned:NAME`.
-- inputs:  {{ROOT}}/lenses/<name>/lens.parquet (a lens folder appears in one rename),
--          plus {{ROOT}}/_schema/lenses/lens.parquet that gives the view its columns (its
--          rows are all NULL and left out by the file-name filter). {{ROOT}} is the warehouse
--          (glob characters escaped) or a folder linking to it (lensdb/catalog.py); the lens
--          folder is matched at the end of the file name, so nothing in the warehouse's path
--          decides what is read. Lenses stored before the `site` column read as post
--          (union_by_name).
CREATE SCHEMA IF NOT EXISTS v1;

-- columns:
--   lens                       the name the lens is stored under (lenses/<lens>/; --lens tuned:<lens>)
--   model                      the model it was trained for
--   model_path                 absolute path of a local model directory (NULL for hub models)
--   model_revision             the model's revision (hub commit or local fingerprint)
--   created_at                 when training finished, UTC
--   lensdb_version             lensdb version that trained it
--   torch_version              torch version of the training
--   device                     device of the training
--   dtype                      the model's dtype during training (translators are float32)
--   n_layers                   the model's number of blocks
--   d_model                    the model's residual width
--   lens_sha256                sha256 of params.pt
--   unembed_hash               tuned-lens's fingerprint of the model's unembedding
--   corpus                     the --text file it was trained on
--   corpus_sha256              sha256 of that file
--   train_tokens               tokens in the training windows
--   eval_tokens                tokens in the held-out windows
--   steps                      optimiser steps
--   tokens_per_step            tokens per step
--   seq_len                    tokens per window
--   lr                         --lr (tuned-lens's scale; SGD runs at lr x (1 - momentum))
--   momentum                   Nesterov momentum
--   weight_decay               weight decay
--   seed                       seed of the window order
--   train_seconds              training time
--   layer                      0 = embeddings, i = after block i-1; n_layers: identity translator
--   kl_bits                    held-out mean KL(final distribution || tuned lens), bits
--   final_ln_kl_bits           the same for the final_ln logit lens
--   train_kl_bits              mean KL over the last training step (NULL at the last layer)
--   site                       post, or mid (block layer-1's residual between attention and MLP)
CREATE OR REPLACE VIEW v1.lenses AS
SELECT * EXCLUDE (filename, site), coalesce(site, 'post') AS site
FROM read_parquet('{{ROOT}}/*/*/lens.parquet', hive_partitioning = false, filename = true, union_by_name = true)
WHERE regexp_matches(filename, '[/\\]lenses[/\\][^/\\]+[/\\]lens\.parquet$');
