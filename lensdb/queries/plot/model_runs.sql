-- what:   a row for each committed run of a model (its full id, or the part after its last
--         '/'): whether the model has any.
-- params: $model
SELECT 1 FROM v1.runs WHERE $model IN (model, string_split(model, '/')[-1])
