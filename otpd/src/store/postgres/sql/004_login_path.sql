-- kron fleet schema, version 4: the login path costs the database less (docs/performance.md,
-- "Fleet mode"). Nothing a host may do changes; the outcomes are the same as in version 3.
--
-- * A function with a SET clause pays for a configuration change on every call, and one written
--   in SQL that cannot be inlined is planned again for every statement that calls it. The
--   helpers below are executable by the owner only and are called only from the SECURITY
--   DEFINER entry functions, which fix search_path; so they carry no SET clause (they run under
--   the entry function's path and name pgcrypto's functions with their schema), the small SQL
--   ones are inlined, and the ones a login calls are PL/pgSQL, whose plans a session keeps.
-- * The entry functions a login calls fix search_path to pg_catalog, pg_temp, without public:
--   measured, every statement costs more with it there. The helpers run under their caller's
--   path; those that pgcrypto's functions are called from name them with their schema.
-- * check_code locks the user's row once and writes it once. Charging the attempt before
--   checking the code, as version 3 did in two writes, is the same thing here: the row stays
--   locked from the first read to the commit, so parallel guesses on any number of hosts are
--   checked one after another and each sees every failure before it.
-- * audit_write looks up the calling host once per batch, not once per row, and commits without
--   waiting for the disk: docs/fleet.md ("Decisions") says why that is safe.

CREATE OR REPLACE FUNCTION kron.seed_key() RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    path text;
    key text;
BEGIN
    SELECT s.value INTO path FROM kron.settings s WHERE s.key = 'key_file';
    IF path IS NULL THEN
        RAISE EXCEPTION 'kron: no key_file set; run kronctl fleet init --key-file';
    END IF;
    key := pg_catalog.btrim(pg_catalog.pg_read_file(path), E' \n\r\t');
    IF key !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'kron: % must hold 64 lowercase hex digits', path;
    END IF;
    RETURN key;
END $$;

CREATE OR REPLACE FUNCTION kron.delay_after(failures integer, free integer, base bigint, max bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN failures < free THEN 0
        ELSE least(max::numeric,
            base::numeric * pg_catalog.power(2::numeric, least(failures - free, 62)))::bigint
    END
$$;

CREATE OR REPLACE FUNCTION kron.totp_code(seed bytea, step bigint, algorithm text, digits integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    h bytea;
    o integer;
    bin bigint;
BEGIN
    h := public.hmac(pg_catalog.int8send(step), seed, pg_catalog.lower(algorithm));
    o := pg_catalog.get_byte(h, pg_catalog.length(h) - 1) & 15;
    bin := ((pg_catalog.get_byte(h, o) & 127)::bigint << 24)
         | (pg_catalog.get_byte(h, o + 1)::bigint << 16)
         | (pg_catalog.get_byte(h, o + 2)::bigint << 8) | pg_catalog.get_byte(h, o + 3)::bigint;
    RETURN pg_catalog.lpad((bin % (10::numeric ^ digits)::bigint)::text, digits, '0');
END $$;

-- As in version 2, with bigint steps throughout (an integer FOR loop cannot hold every step).
CREATE OR REPLACE FUNCTION kron.matching_step(seed bytea, algorithm text, digits integer,
    period integer, skew integer, code text, now bigint, used bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    origin bigint := now / period;
    first bigint;
    step bigint;
BEGIN
    IF code IS NULL OR pg_catalog.length(code) <> digits OR code !~ '^[0-9]+$' THEN
        RETURN NULL;
    END IF;
    step := greatest(origin - skew, 0);
    WHILE step <= origin + skew LOOP
        IF kron.totp_code(seed, step, algorithm, digits) = code THEN
            IF first IS NULL THEN
                first := step;
            END IF;
            IF used IS NULL OR step > used THEN
                RETURN step;
            END IF;
        END IF;
        step := step + 1;
    END LOOP;
    RETURN first;
END $$;

CREATE OR REPLACE FUNCTION kron.charge_row(p_name text, p_now bigint, p_free integer,
    p_base bigint, p_max bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r kron.users;
    quiet bigint;
    v_failures integer;
    delay bigint;
BEGIN
    INSERT INTO kron.users (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM kron.users u WHERE u.name = p_name FOR UPDATE;
    IF p_now < r.next_attempt THEN
        RETURN r.next_attempt;
    END IF;
    quiet := greatest(p_now - r.last_attempt, 0) / greatest(p_max, 1);
    v_failures := greatest(r.failures
        - least(quiet, 2147483647), 0)::integer + 1;
    delay := kron.delay_after(v_failures, p_free, p_base, p_max);
    UPDATE kron.users u SET failures = v_failures, last_attempt = p_now,
        next_attempt = CASE WHEN delay = 0 THEN 0 ELSE p_now + delay END,
        version = u.version + 1
    WHERE u.name = p_name;
    RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION kron.user_json(r kron.users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.to_jsonb(r) - 'seed' - 'pend_seed'
        || pg_catalog.jsonb_build_object('has_token', r.seed IS NOT NULL)
$$;

CREATE OR REPLACE FUNCTION kron.caller_host() RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN coalesce((SELECT h.host FROM kron.hosts h WHERE h.role = session_user),
        session_user::text);
END $$;

CREATE OR REPLACE FUNCTION kron.db_now() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.date_part('epoch', pg_catalog.now())::bigint
$$;

CREATE OR REPLACE FUNCTION kron.get_user(p_name text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT kron.user_json(u) FROM kron.users u WHERE u.name = p_name);
END $$;

-- A TOTP answer, as in version 3 (outcomes accepted, replayed, wrong, no-token, throttled,
-- not-totp; the accepted step; used_steps for another host's pack), in one read under the row
-- lock and one write.
CREATE OR REPLACE FUNCTION kron.check_code(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, OUT outcome text, OUT until bigint, OUT accepted_step bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r kron.users;
    step bigint;
    quiet bigint;
    v_failures integer;
    v_delay bigint;
    v_host text;
BEGIN
    until := 0;
    SELECT * INTO r FROM kron.users u WHERE u.name = p_name FOR UPDATE;
    IF p_charge AND (NOT FOUND OR r.seed IS NULL OR length(p_code) <> r.digits
            OR (p_sent IS NOT NULL AND r.outbox -> 'code' ->> 'purpose' = p_sent
                AND (r.outbox -> 'code' ->> 'expires')::bigint > p_now)) THEN
        -- Not only a TOTP code could be meant: nothing charged, otpd takes its general path.
        outcome := 'not-totp';
        RETURN;
    END IF;
    IF NOT FOUND OR r.seed IS NULL THEN
        outcome := 'no-token';
        RETURN;
    END IF;
    IF p_charge THEN
        IF p_now < r.next_attempt THEN
            outcome := 'throttled';
            until := r.next_attempt;
            RETURN;
        END IF;
        quiet := greatest(p_now - r.last_attempt, 0) / greatest(p_max, 1);
        v_failures := greatest(r.failures - least(quiet, 2147483647), 0)::integer + 1;
    END IF;
    step := kron.matching_step(public.pgp_sym_decrypt_bytea(r.seed, kron.seed_key()),
        r.algorithm, r.digits, r.period, p_skew, p_code, p_now, r.last_step);
    IF step IS NOT NULL AND (r.last_step IS NULL OR step > r.last_step) THEN
        -- The charge and its refund with the accepted step: one new row version.
        UPDATE kron.users u SET last_step = step, last_used = p_now,
            failures = greatest(coalesce(v_failures, u.failures) - 1, 0), next_attempt = 0,
            last_attempt = CASE WHEN p_charge THEN p_now ELSE u.last_attempt END,
            version = u.version + 1
        WHERE u.name = p_name;
        outcome := 'accepted';
        accepted_step := step;
        v_host := kron.caller_host();
        IF EXISTS (SELECT FROM kron.offline_packs p WHERE p.name = p_name AND p.host <> v_host
                AND p.generation = r.generation AND p.until_step >= step) THEN
            INSERT INTO kron.used_steps (name, step, host, at, offline)
            VALUES (p_name, step, v_host, p_now, false) ON CONFLICT DO NOTHING;
        END IF;
        RETURN;
    END IF;
    IF p_charge THEN
        v_delay := kron.delay_after(v_failures, p_free, p_base, p_max);
        UPDATE kron.users u SET failures = v_failures, last_attempt = p_now,
            next_attempt = CASE WHEN v_delay = 0 THEN 0 ELSE p_now + v_delay END,
            version = u.version + 1
        WHERE u.name = p_name;
    END IF;
    outcome := CASE WHEN step IS NULL THEN 'wrong' ELSE 'replayed' END;
END $$;

-- As in version 2; the host looked up once per batch, and the commit does not wait for the
-- disk (docs/fleet.md, "Decisions").
CREATE OR REPLACE FUNCTION kron.audit_write(p_at bigint[], p_event text[], p_user text[],
    p_service text[], p_rhost text[], p_tty text[], p_uid bigint[], p_detail text[])
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_host text := kron.caller_host();
    added integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO kron.audit (at, host, event, "user", service, rhost, tty, caller_uid, detail)
    SELECT to_timestamp(a.at), v_host, left(a.event, 64), left(a.usr, 256),
        left(a.service, 1024), left(a.rhost, 1024), left(a.tty, 1024), a.uid,
        left(a.detail, 1024)
    FROM unnest(p_at, p_event, p_user, p_service, p_rhost, p_tty, p_uid, p_detail)
        AS a(at, event, usr, service, rhost, tty, uid, detail);
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN added;
END $$;

-- The functions that enroll, import and make offline packs keep public in their path (pgcrypto
-- is there): nobody but the owner may create objects in it, as PostgreSQL 15 makes new
-- databases, made sure of here for databases whose public schema is older.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
