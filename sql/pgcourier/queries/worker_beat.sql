-- A worker process says it is alive (see pgcourier.worker), and prunes the rows of
-- workers that stopped beating long ago (crashed without a word).
WITH pruned AS (
    DELETE FROM pgcourier.worker
    WHERE beat_at < coalesce(%(now)s::timestamptz, clock_timestamp()) - make_interval(secs => %(forget_after_s)s)
)
INSERT INTO pgcourier.worker AS w (worker_id, hostname, pid, name, queues, started_at, beat_at,
                                   last_claim_at, listening, loops_alive)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(name)s, %(queues)s, %(started_at)s,
        coalesce(%(now)s::timestamptz, clock_timestamp()), %(last_claim_at)s, %(listening)s,
        %(loops_alive)s)
ON CONFLICT (worker_id) DO UPDATE SET
    beat_at = EXCLUDED.beat_at,
    last_claim_at = EXCLUDED.last_claim_at,
    listening = EXCLUDED.listening,
    loops_alive = EXCLUDED.loops_alive
