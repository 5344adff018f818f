-- Run in every database once the run has settled: each outgoing link has delivered
-- everything and its receiver confirmed it (the links keeper then prunes the rows,
-- so none is retained), and no row was dropped for being kept past the retention.
SELECT coalesce(sum(retained + expired), 0),
       string_agg(format('to %s (%s, %s): %s retained, oldest %s s; %s expired', node, mode,
                         state, retained, round(coalesce(lag_s, 0)::numeric, 1), expired), '; ')
           FILTER (WHERE retained + expired > 0)
FROM pgcourier.links
WHERE direction = 'out'
