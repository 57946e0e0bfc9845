-- kron fleet schema, version 3: offline logins (docs/fleet.md, "Offline logins").
-- A host keeps, for the users who log in on it, a pack of slow hashes of their next codes, made
-- here from the seed (which never leaves the database); while it cannot reach the database it
-- accepts a code only from its pack, each step once, and journals every use and failure. When it
-- is back it replays the journal here: the greatest step wins, failures are added, and a step
-- that another host also accepted is reported. Replaying an entry twice changes nothing.

-- The owner's knobs, in seconds and bcrypt rounds: how far ahead of the database's clock a pack
-- may ever reach (whatever a host asks for), and the cost of each hash in a pack.
INSERT INTO kron.settings (key, value) VALUES ('offline_max_window', '28800'), ('offline_cost', '6')
ON CONFLICT (key) DO NOTHING;

-- Which host holds a pack of which user, for which token (generation) and up to which step; and
-- up to when the host had replayed its journal (synced_at). For the owner after a compromise:
-- whose codes did that host hold, and until when.
CREATE TABLE kron.offline_packs (
    host text NOT NULL,
    name text NOT NULL,
    generation bigint NOT NULL,
    from_step bigint NOT NULL,
    until_step bigint NOT NULL,
    fetched_at bigint NOT NULL,
    synced_at bigint NOT NULL,
    PRIMARY KEY (name, host)
);
CREATE INDEX offline_packs_host ON kron.offline_packs (host);

-- Steps accepted for users whose packs another host holds (online here, or offline and
-- replayed): what a replayed offline use is compared with to find a code used twice. Rows go
-- once every host that could still replay that step has synced past it (kron.offline_floors).
CREATE TABLE kron.used_steps (
    name text NOT NULL,
    step bigint NOT NULL,
    host text NOT NULL,
    at bigint NOT NULL,
    offline boolean NOT NULL,
    PRIMARY KEY (name, step, host)
);

-- Every journal entry a host replayed, under the random id the host gave it: a second replay of
-- the same entry finds it and changes nothing. Also the record of every offline use and failure.
CREATE TABLE kron.offline_journal (
    host text NOT NULL,
    id bytea NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    step bigint,
    generation bigint,
    at bigint NOT NULL,
    outcome text NOT NULL DEFAULT '',
    replayed timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, id)
);

-- The database's clock in unix seconds: packs are bounded by it, never by a host's clock.
CREATE OR REPLACE FUNCTION kron.db_now() RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT extract(epoch FROM now())::bigint
$$;

-- A TOTP answer, as in version 2, and also the step it took (accepted_step). When another host
-- holds a pack of this user that covers the step, the step is remembered in kron.used_steps, so
-- that host's replayed offline use of the same step is reported as a double use.
DROP FUNCTION kron.check_code(text, text, bigint, integer, boolean, integer, bigint, bigint, text);
CREATE FUNCTION kron.check_code(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, OUT outcome text, OUT until bigint, OUT accepted_step bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r kron.users;
    step bigint;
    taken bigint;
    v_host text;
BEGIN
    until := 0;
    IF p_charge THEN
        SELECT * INTO r FROM kron.users WHERE name = p_name;
        IF NOT FOUND OR r.seed IS NULL OR length(p_code) <> r.digits
            OR (p_sent IS NOT NULL AND r.outbox -> 'code' ->> 'purpose' = p_sent
                AND (r.outbox -> 'code' ->> 'expires')::bigint > p_now) THEN
            outcome := 'not-totp';
            RETURN;
        END IF;
        until := kron.charge_row(p_name, p_now, p_free, p_base, p_max);
        IF until > 0 THEN
            outcome := 'throttled';
            RETURN;
        END IF;
    END IF;
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF NOT FOUND OR r.seed IS NULL THEN
        outcome := 'no-token';
        RETURN;
    END IF;
    step := kron.matching_step(pgp_sym_decrypt_bytea(r.seed, kron.seed_key()), r.algorithm,
        r.digits, r.period, p_skew, p_code, p_now, r.last_step);
    IF step IS NULL THEN
        outcome := 'wrong';
        RETURN;
    END IF;
    UPDATE kron.users SET last_step = step, last_used = p_now,
        failures = greatest(failures - 1, 0), next_attempt = 0, version = version + 1
    WHERE name = p_name AND generation = r.generation
        AND (last_step IS NULL OR last_step < step)
    RETURNING last_step INTO taken;
    outcome := CASE WHEN taken IS NULL THEN 'replayed' ELSE 'accepted' END;
    accepted_step := taken;
    IF taken IS NOT NULL THEN
        v_host := kron.caller_host();
        IF EXISTS (SELECT FROM kron.offline_packs p WHERE p.name = p_name AND p.host <> v_host
                AND p.generation = r.generation AND p.until_step >= taken) THEN
            INSERT INTO kron.used_steps (name, step, host, at, offline)
            VALUES (p_name, taken, v_host, p_now, false) ON CONFLICT DO NOTHING;
        END IF;
    END IF;
END $$;

-- The next codes of `p_name` as a host may hold them: for `p_count` steps from `p_from` (at most
-- 480 a call, never before two steps ago nor past offline_max_window ahead of the database's
-- clock), each as bcrypt('kron-offline-v1:' || step || ':' || code) under one random salt, of
-- which the host gets the setting (cost and salt) and the 31-character hashes. Never the seed.
-- Also the user's state a host needs offline (token parameters and generation, last step,
-- throttle). NULL if the user has no confirmed token (then the host's pack row goes).
CREATE OR REPLACE FUNCTION kron.offline_pack(p_name text, p_from bigint, p_count integer)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r kron.users;
    v_host text := kron.caller_host();
    v_now bigint := kron.db_now();
    v_max bigint;
    v_cost integer;
    v_from bigint;
    v_last bigint;
    v_seed bytea;
    v_setting text;
    v_hashes text[] := '{}';
BEGIN
    SELECT * INTO r FROM kron.users WHERE name = p_name;
    IF NOT FOUND OR r.seed IS NULL THEN
        DELETE FROM kron.offline_packs WHERE name = p_name AND host = v_host;
        RETURN NULL;
    END IF;
    SELECT value::bigint INTO v_max FROM kron.settings WHERE key = 'offline_max_window';
    SELECT value::integer INTO v_cost FROM kron.settings WHERE key = 'offline_cost';
    v_cost := least(greatest(coalesce(v_cost, 6), 4), 12);
    v_from := greatest(p_from, v_now / r.period - 2);
    v_last := least(v_from + least(greatest(p_count, 0), 480) - 1,
        (v_now + greatest(coalesce(v_max, 28800), 0)) / r.period);
    v_setting := gen_salt('bf', v_cost);
    IF v_last >= v_from THEN
        v_seed := pgp_sym_decrypt_bytea(r.seed, kron.seed_key());
        SELECT array_agg(substr(crypt('kron-offline-v1:' || s || ':'
                || kron.totp_code(v_seed, s, r.algorithm, r.digits), v_setting), 30) ORDER BY s)
        INTO v_hashes FROM generate_series(v_from, v_last) s;
        INSERT INTO kron.offline_packs AS p (host, name, generation, from_step, until_step,
            fetched_at, synced_at)
        VALUES (v_host, p_name, r.generation, v_from, v_last, v_now, v_now)
        ON CONFLICT (name, host) DO UPDATE SET
            from_step = CASE WHEN p.generation = EXCLUDED.generation
                THEN least(p.from_step, EXCLUDED.from_step) ELSE EXCLUDED.from_step END,
            until_step = CASE WHEN p.generation = EXCLUDED.generation
                THEN greatest(p.until_step, EXCLUDED.until_step) ELSE EXCLUDED.until_step END,
            generation = EXCLUDED.generation, fetched_at = v_now;
    ELSE
        v_last := v_from - 1;
    END IF;
    RETURN jsonb_build_object('generation', r.generation, 'algorithm', r.algorithm,
        'digits', r.digits, 'period', r.period, 'last_step', r.last_step,
        'failures', r.failures, 'next_attempt', r.next_attempt, 'last_attempt', r.last_attempt,
        'from', v_from, 'setting', v_setting, 'hashes', to_jsonb(v_hashes), 'now', v_now);
END $$;

-- What a host refreshes for every user it holds a pack of, once a minute: the token's generation,
-- the last step used anywhere and the throttle. p_synced says the host had replayed its whole
-- journal as of then (the earlier of it and the database's clock is kept: a host can only delay
-- the pruning). Rows of kron.used_steps no host could still replay against go here.
CREATE OR REPLACE FUNCTION kron.offline_floors(p_synced bigint)
RETURNS SETOF jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_host text := kron.caller_host();
BEGIN
    UPDATE kron.offline_packs SET synced_at = greatest(synced_at, least(p_synced, kron.db_now()))
    WHERE host = v_host;
    DELETE FROM kron.used_steps u USING kron.users usr
    WHERE usr.name = u.name
        AND u.name IN (SELECT name FROM kron.offline_packs WHERE host = v_host)
        AND NOT EXISTS (SELECT FROM kron.offline_packs p WHERE p.name = u.name
            AND p.host <> u.host AND p.until_step >= u.step
            AND p.synced_at < (u.step + 3) * coalesce(usr.period, 30));
    RETURN QUERY SELECT jsonb_build_object('name', p.name, 'generation', u.generation,
            'has_token', u.seed IS NOT NULL, 'last_step', u.last_step, 'failures', u.failures,
            'next_attempt', u.next_attempt, 'last_attempt', u.last_attempt)
        FROM kron.offline_packs p JOIN kron.users u ON u.name = p.name
        WHERE p.host = v_host ORDER BY p.name;
END $$;

-- The host no longer keeps a pack of p_name (not seen there for offline_keep).
CREATE OR REPLACE FUNCTION kron.offline_drop(p_name text) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (DELETE FROM kron.offline_packs WHERE name = p_name AND host = kron.caller_host()
        RETURNING 1)
    SELECT EXISTS (SELECT FROM gone)
$$;

-- Replays one entry of a host's journal, once: 'already' if this host replayed it before
-- (nothing changes), 'applied', 'no-user', 'refused' (a use of a step no pack can have held:
-- later than offline_max_window past the database's clock; reported, nothing changes),
-- 'retired' (a use of a token that was reset or
-- replaced meanwhile: reported, the new token untouched) or 'double-use:HOST' (the step was also
-- accepted on HOST: reported in the audit table, and the host logs it).
-- A use raises last_step to the greatest of both; a failure is added to the throttle.
CREATE OR REPLACE FUNCTION kron.offline_replay(p_id bytea, p_name text, p_kind text,
    p_step bigint, p_generation bigint, p_at bigint, p_free integer, p_base bigint, p_max bigint)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_host text := kron.caller_host();
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
    VALUES (v_host, p_id, p_name, p_kind, p_step, p_generation, p_at)
    ON CONFLICT (host, id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN 'already';
    END IF;
    SELECT value::bigint INTO v_max FROM kron.settings WHERE key = 'offline_max_window';
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        result := 'no-user';
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
        UPDATE kron.users SET failures = v_failures, last_attempt = greatest(last_attempt, p_at),
            next_attempt = CASE WHEN v_delay = 0 THEN next_attempt
                ELSE greatest(next_attempt, p_at + v_delay) END,
            version = version + 1
        WHERE name = p_name;
        result := 'applied';
    ELSIF r.seed IS NULL OR r.generation <> p_generation THEN
        INSERT INTO kron.audit (at, host, event, "user", detail)
        VALUES (to_timestamp(p_at), v_host, 'offline-retired', p_name,
            format('a code of a token reset or replaced meanwhile was accepted offline on host %s (step %s)',
                v_host, p_step));
        result := 'retired';
    ELSE
        SELECT u.host INTO v_other FROM kron.used_steps u
        WHERE u.name = p_name AND u.step = p_step AND u.host <> v_host ORDER BY u.at LIMIT 1;
        UPDATE kron.users SET last_step = greatest(coalesce(last_step, p_step), p_step),
            last_used = greatest(last_used, p_at), version = version + 1
        WHERE name = p_name;
        INSERT INTO kron.used_steps (name, step, host, at, offline)
        VALUES (p_name, p_step, v_host, p_at, true) ON CONFLICT DO NOTHING;
        IF v_other IS NULL THEN
            result := 'applied';
        ELSE
            INSERT INTO kron.audit (at, host, event, "user", detail)
            VALUES (to_timestamp(p_at), v_host, 'double-use', p_name,
                format('the code of step %s was accepted on host %s and offline on host %s',
                    p_step, v_other, v_host));
            result := 'double-use:' || v_other;
        END IF;
    END IF;
    UPDATE kron.offline_journal SET outcome = result WHERE host = v_host AND id = p_id;
    RETURN result;
END $$;

-- What `kronctl fleet status` shows of the database, now with what it knows of every host's
-- packs: users, the newest fetch and the oldest journal sync.
CREATE OR REPLACE FUNCTION kron.status() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object(
        'schema_version', (SELECT value::integer FROM kron.settings WHERE key = 'schema_version'),
        'server_version', current_setting('server_version'),
        'primary', NOT pg_is_in_recovery(),
        'host', kron.caller_host(),
        'replicas', coalesce((SELECT jsonb_agg(jsonb_build_object(
            'name', coalesce(application_name, ''), 'state', coalesce(state, ''),
            'sync_state', coalesce(sync_state, '')))
            FROM pg_stat_replication), '[]'),
        'offline_max_window', (SELECT value::bigint FROM kron.settings
            WHERE key = 'offline_max_window'),
        'hosts', coalesce((SELECT jsonb_agg(jsonb_build_object('host', h.host,
            'users', (SELECT count(*) FROM kron.offline_packs p WHERE p.host = h.host),
            'fetched', (SELECT coalesce(max(fetched_at), 0) FROM kron.offline_packs p
                WHERE p.host = h.host),
            'synced', (SELECT coalesce(min(synced_at), 0) FROM kron.offline_packs p
                WHERE p.host = h.host)) ORDER BY h.host)
            FROM kron.hosts h), '[]'))
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    kron.check_code(text, text, bigint, integer, boolean, integer, bigint, bigint, text),
    kron.offline_pack(text, bigint, integer),
    kron.offline_floors(bigint),
    kron.offline_drop(text),
    kron.offline_replay(bytea, text, text, bigint, bigint, bigint, integer, bigint, bigint),
    kron.status()
TO kron_host;
GRANT EXECUTE ON FUNCTION kron.status() TO kron_auditor;
