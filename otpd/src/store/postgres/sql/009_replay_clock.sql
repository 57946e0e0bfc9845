-- kron fleet schema, version 9: a replayed journal entry's time is the host's clock, so it is
-- taken as at most the database's. Before, a host whose clock ran ahead (a wrong clock, or a
-- forged journal) replayed its offline failures dated ahead: the user's next_attempt went to
-- that date plus the backoff, and every host of the fleet refused the user's codes until then.
-- Now such a failure counts from the database's now, and a use as made now.
-- And an entry replayed a second time (the host stopped between the database's commit and
-- taking the entry off its journal) whose first replay was a security event (a double use, a
-- refused or a retired use) answers 'already:' and that outcome, where it answered 'already'
-- alone: the host logs the event it would otherwise have lost with the first answer. And a use
-- of a token reset or replaced meanwhile is 'retired' before its step is judged against the
-- current token's period: after a reset to a longer period an old step looked beyond any pack
-- and was reported as 'refused'. Otherwise as in version 3; the function keeps its arguments
-- and grants.

CREATE OR REPLACE FUNCTION kron.offline_replay(p_id bytea, p_name text, p_kind text,
    p_step bigint, p_generation bigint, p_at bigint, p_free integer, p_base bigint, p_max bigint)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_host text := kron.caller_host();
    -- When it happened, as the host says, but never later than the database's clock.
    v_at bigint := least(p_at, kron.db_now());
    r kron.users;
    v_other text;
    v_failures integer;
    v_delay bigint;
    v_max bigint;
    result text;
BEGIN
    IF p_kind NOT IN ('use', 'failure') OR length(p_id) <> 16
        OR (p_kind = 'use' AND (p_step IS NULL OR p_generation IS NULL)) THEN
        RAISE EXCEPTION 'kron: malformed offline journal entry';
    END IF;
    INSERT INTO kron.offline_journal (host, id, name, kind, step, generation, at)
    VALUES (v_host, p_id, p_name, p_kind, p_step, p_generation, v_at)
    ON CONFLICT (host, id) DO NOTHING;
    IF NOT FOUND THEN
        -- Sent again (the host stopped before it took the entry off its journal): nothing
        -- changes, and a security outcome is said again, so the host still logs it.
        SELECT outcome INTO result FROM kron.offline_journal WHERE host = v_host AND id = p_id;
        IF result LIKE 'double-use:%' OR result IN ('refused', 'retired') THEN
            RETURN 'already:' || result;
        END IF;
        RETURN 'already';
    END IF;
    SELECT value::bigint INTO v_max FROM kron.settings WHERE key = 'offline_max_window';
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        result := 'no-user';
    ELSIF p_kind = 'use' AND (r.seed IS NULL OR r.generation <> p_generation) THEN
        -- Before the step's range is judged: it is a step of the retired token's period.
        INSERT INTO kron.audit (at, host, event, "user", detail)
        VALUES (to_timestamp(v_at), v_host, 'offline-retired', p_name,
            format('a code of a token reset or replaced meanwhile was accepted offline on host %s (step %s)',
                v_host, p_step));
        result := 'retired';
    ELSIF p_kind = 'use' AND (p_step < 0 OR p_step::numeric * coalesce(r.period, 30)
            > kron.db_now() + coalesce(v_max, 28800) + 120) THEN
        -- No pack ever held this step: taking it would lock the user's codes out until then.
        INSERT INTO kron.audit (at, host, event, "user", detail)
        VALUES (now(), v_host, 'offline-refused', p_name,
            format('host %s replayed a use of step %s, beyond any pack', v_host, p_step));
        result := 'refused';
    ELSIF p_kind = 'failure' THEN
        v_failures := r.failures + 1;
        v_delay := kron.delay_after(v_failures, p_free, p_base, p_max);
        UPDATE kron.users SET failures = v_failures, last_attempt = greatest(last_attempt, v_at),
            next_attempt = CASE WHEN v_delay = 0 THEN next_attempt
                ELSE greatest(next_attempt, v_at + v_delay) END,
            version = version + 1
        WHERE name = p_name;
        result := 'applied';
    ELSE
        SELECT u.host INTO v_other FROM kron.used_steps u
        WHERE u.name = p_name AND u.step = p_step AND u.host <> v_host ORDER BY u.at LIMIT 1;
        UPDATE kron.users SET last_step = greatest(coalesce(last_step, p_step), p_step),
            last_used = greatest(last_used, v_at), version = version + 1
        WHERE name = p_name;
        INSERT INTO kron.used_steps (name, step, host, at, offline)
        VALUES (p_name, p_step, v_host, v_at, true) ON CONFLICT DO NOTHING;
        IF v_other IS NULL THEN
            result := 'applied';
        ELSE
            INSERT INTO kron.audit (at, host, event, "user", detail)
            VALUES (to_timestamp(v_at), v_host, 'double-use', p_name,
                format('the code of step %s was accepted on host %s and offline on host %s',
                    p_step, v_other, v_host));
            result := 'double-use:' || v_other;
        END IF;
    END IF;
    UPDATE kron.offline_journal SET outcome = result WHERE host = v_host AND id = p_id;
    RETURN result;
END $$;
