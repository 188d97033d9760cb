-- what: control margins: per model, run and lens, how many controls ever prefer their own
--       answer over the paired prompt's (margin > 0), the first such layer on average, and
--       the largest margin.
SELECT model, run_id, lens,
       count(*) AS controls,
       count(first_control_margin_pos) AS controls_with_positive_margin,
       avg(first_control_margin_pos) AS mean_first_positive_layer,
       max(max_control_margin) AS max_control_margin,
       avg(max_control_margin) AS mean_max_control_margin
FROM v1.control_summary
GROUP BY model, run_id, lens
ORDER BY model, run_id, lens;
