-- what:   a row if the catalog has the view v1.vocab (run_id, token_id, piece, text).
-- params: none
SELECT 1 FROM duckdb_views() WHERE schema_name = 'v1' AND view_name = 'vocab'
