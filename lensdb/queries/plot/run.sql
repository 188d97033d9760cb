-- what:   one committed run: its v1.runs row (every manifest column).
-- params: $run (the run id)
SELECT * FROM v1.runs WHERE run_id = $run
