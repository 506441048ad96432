-- The twin's emulation of Aurora PostgreSQL's aurora_global_db_status(), with Aurora's column names and
-- meanings (Aurora User Guide, "aurora_global_db_status"), computed from PostgreSQL's REAL streaming state.
--
-- Which region a server is: the custom setting tandem.aws_region (set per server: postgresql.conf, or
-- ALTER SYSTEM SET tandem.aws_region = '<region>' + pg_reload_conf(); a catalog setting would replicate to
-- the standby and lie there), else cluster_name. A standby's region is its walreceiver's application_name
-- (primary_conninfo application_name=<region>; PostgreSQL defaults it to the standby's cluster_name).
--
-- On the writer (not in recovery): one row for itself (durability and RPO lag -1, last_lag_calculation_time
-- 1970-01-01, as Aurora marks the primary) and one row per streaming standby from pg_stat_replication:
--   rpo_lag_in_msec        = replay_lag (the time until the standby applied recent commits); NULL lag with
--                            the standby replayed up to what was sent is 0 (caught up); NULL otherwise is
--                            NULL (unknown - never a made-up 0). While replay is paused and WAL keeps coming,
--                            PostgreSQL reports the lag the oldest unreplayed WAL would have if applied now,
--                            so it grows with every standby reply.
--   durability_lag_in_msec = flush_lag, the same way (WAL made durable on the standby)
--   last_lag_calculation_time = reply_time (the standby's last status reply, when the lags were computed)
--   feedback_xmin / feedback_epoch = the standby's hot-standby-feedback xmin and its epoch
-- On a standby (in recovery; Aurora lets any instance call the function): its own row, from what it has
-- received and replayed (durability lag NULL: it cannot see the writer's WAL position). RPO lag: 0 when everything received is replayed, else the time since the last
-- replayed commit (an upper bound: the standby cannot see when the unreplayed commits happened); NULL when
-- no WAL receiver runs. last_lag_calculation_time = the last message received from the writer, so a writer
-- that went silent shows up as a calculation that stopped.
CREATE OR REPLACE FUNCTION aurora_global_db_status(
    OUT aws_region text,
    OUT highest_lsn_written bigint,
    OUT durability_lag_in_msec bigint,
    OUT rpo_lag_in_msec bigint,
    OUT last_lag_calculation_time timestamptz,
    OUT feedback_epoch integer,
    OUT feedback_xmin bigint)
RETURNS SETOF record
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    me text := coalesce(nullif(current_setting('tandem.aws_region', true), ''),
                        nullif(current_setting('cluster_name', true), ''));
    epoch_now integer;
BEGIN
    IF NOT pg_is_in_recovery() THEN
        epoch_now := (txid_snapshot_xmin(txid_current_snapshot()) >> 32)::integer;
        RETURN QUERY
            SELECT me, (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, -1::bigint, -1::bigint,
                   timestamptz '1970-01-01 00:00:00+00', NULL::integer, NULL::bigint;
        RETURN QUERY
            SELECT r.application_name::text,
                   (coalesce(r.flush_lsn, '0/0'::pg_lsn) - '0/0'::pg_lsn)::bigint,
                   CASE WHEN r.flush_lag IS NOT NULL THEN (extract(epoch FROM r.flush_lag) * 1000)::bigint
                        WHEN r.flush_lsn >= r.sent_lsn THEN 0::bigint END,
                   CASE WHEN r.replay_lag IS NOT NULL THEN (extract(epoch FROM r.replay_lag) * 1000)::bigint
                        WHEN r.replay_lsn >= r.sent_lsn THEN 0::bigint END,
                   r.reply_time,
                   CASE WHEN r.backend_xmin IS NOT NULL THEN epoch_now END,
                   r.backend_xmin::text::bigint
            FROM pg_stat_replication r
            WHERE r.state IN ('streaming', 'catchup');
    ELSE
        RETURN QUERY
            SELECT me,
                   (pg_last_wal_receive_lsn() - '0/0'::pg_lsn)::bigint,
                   NULL::bigint,  -- the standby cannot see the writer's WAL position
                   CASE WHEN w.pid IS NULL THEN NULL::bigint
                        WHEN pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn() THEN 0::bigint
                        ELSE (extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) * 1000)::bigint
                   END,
                   w.last_msg_receipt_time,
                   NULL::integer,
                   NULL::bigint
            FROM (SELECT 1) AS one
            LEFT JOIN pg_stat_wal_receiver w ON w.status = 'streaming';
    END IF;
END
$$;

COMMENT ON FUNCTION aurora_global_db_status() IS
    'Tandem twin: emulation of Aurora''s aurora_global_db_status() from PostgreSQL streaming replication';
