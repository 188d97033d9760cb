-- what: `lensdb show RUN`: the run's prompts per raw-lens artifact risk (high, medium, low).
SELECT lens_artifact_risk AS risk, count(*) AS prompts
FROM v1.raw_lens_summary WHERE run_id = $run
GROUP BY risk ORDER BY list_position(['high', 'medium', 'low'], risk)
