-- pgbench script for bench/pg.sh's queue workload: one job's life, the
-- database's own ceiling for cio-pg's task queue. Each pgbench
-- transaction runs the three statements cio-pg runs for a job, on its own
-- table (cio_jobs, made by cio_pgq_install) and with the same parameters:
--
--   1. enqueue: pg/queue.c's enqueue_sql, as cio_pgq_enqueue sends it with
--      default options (priority 0, max_attempts 5, run now, backoff 1 s,
--      no idempotency key) and a 16-byte payload;
--   2. claim: pg/worker.c's claim_sql (SELECT ... FOR UPDATE SKIP LOCKED
--      inside an UPDATE; a 30 s lease), which returns the job's id and
--      attempt number;
--   3. complete: pg/worker.c's complete_sql, fenced by that attempt number,
--      with no result.
--
-- Each statement commits on its own (no BEGIN/COMMIT), as the library's do,
-- so a job is enqueued, claimed and completed in three transactions, and a
-- claim may take another client's job (SKIP LOCKED). A claim may also find
-- nothing, rarely (its snapshot predates another client's enqueue while the
-- jobs it sees are locked by other claims): the claim's columns are then
-- aggregated to one row of zeros (pgbench's \gset wants one row), the
-- completion updates nothing, and that job stays queued for a later
-- transaction. pg.sh counts the jobs left queued after the run. Run with
--   pgbench -n -c 4 -j 1 -T 5 -M extended -D q=QUEUE -f pgq_pgbench.sql DSN
-- (-M extended: an unnamed statement each time, as cio-pg's
-- cio_pg_query_params; -M prepared: the ceiling with prepared statements).
-- The statements are copies: keep them in step with pg/queue.c and
-- pg/worker.c.
WITH ins AS (INSERT INTO cio_jobs (queue, payload, priority, max_attempts, visible_at, backoff_base, idem_key) VALUES (:q, '\x62656e63685f706771000000000000ff'::bytea, 0, 5, CASE WHEN 0::float8 > 0 THEN to_timestamp(0::float8) ELSE clock_timestamp() + 0::float8 * interval '1 second' END, 1, NULL) ON CONFLICT (queue, idem_key) DO NOTHING RETURNING id) SELECT id, pg_notify('cio_jobs', :q) FROM ins;
WITH c AS (UPDATE cio_jobs j SET state = CASE WHEN j.attempts >= j.max_attempts THEN 3 ELSE 1 END, attempts = CASE WHEN j.attempts >= j.max_attempts THEN j.attempts ELSE j.attempts + 1 END, visible_at = now() + 30::float8 * interval '1 second', worker = 'pgbench', error = CASE WHEN j.attempts >= j.max_attempts THEN 'the lease of its last attempt expired' ELSE j.error END, finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END WHERE j.id = (SELECT id FROM cio_jobs WHERE queue = :q AND state IN (0, 1) AND visible_at <= now() ORDER BY priority DESC, visible_at, id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING j.id, j.state, j.attempts, j.max_attempts, j.payload), n AS (SELECT pg_notify('cio_jobs_done', id::text) FROM c WHERE state = 3) SELECT coalesce(max(c.id), 0) AS job_id, coalesce(max(c.attempts), 0) AS job_attempt, max(c.state), max(c.max_attempts), (array_agg(c.payload))[1], (SELECT count(*) FROM n) FROM c \gset
WITH u AS (UPDATE cio_jobs SET state = 2, result = NULL, error = NULL, finished_at = now(), visible_at = now() WHERE id = :job_id AND state = 1 AND attempts = :job_attempt RETURNING id) SELECT pg_notify('cio_jobs_done', id::text) FROM u;
