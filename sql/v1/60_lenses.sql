-- view:    v1.lenses
-- version: 1
-- what:    tuned lenses stored in the warehouse (`lensdb train-lens --name`), one row per
--          lens x layer (0..n_layers; the last layer's translator is the identity): the
--          training settings, and the mean KL(model's final distribution || lens) in bits
--          on the held-out end of the corpus of the tuned lens (kl_bits) and of the
--          final_ln logit lens (final_ln_kl_bits), and over the last training step
--          (train_kl_bits; NULL at the last layer, which is not trained). Use a stored
--          lens with `lensdb extract --lens tuned:NAME`.
-- inputs:  {{WAREHOUSE}}/lenses/<name>/lens.parquet (a lens folder appears in one rename),
--          plus the empty _schema/lenses/lens.parquet that gives the view its columns.
CREATE SCHEMA IF NOT EXISTS v1;

CREATE OR REPLACE VIEW v1.lenses AS
SELECT * EXCLUDE (filename)
FROM read_parquet('{{WAREHOUSE}}/*/*/lens.parquet', hive_partitioning = false, filename = true)
WHERE regexp_matches(filename, '/lenses/[^/]+/lens\.parquet$');
