-- This database's outgoing links, for the catch-up watch after a restart.
SELECT node, state, lag_s, retained FROM pgcourier.links WHERE direction = 'out'
