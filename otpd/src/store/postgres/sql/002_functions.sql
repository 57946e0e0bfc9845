-- kron fleet schema, version 2: the functions hosts call, and the grants.
-- Every function a host may call is SECURITY DEFINER (it runs as the owner, who may read the
-- tables and the key file) with a fixed search_path; hosts get EXECUTE on these and nothing
-- else. Each call is one statement: a login's check and its accepted step commit together.

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
ALTER DEFAULT PRIVILEGES IN SCHEMA kron REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- The seed key: 64 hex digits in a file on the database server (`key_file` setting), so a dump
-- of this database holds only ciphertext. Owner only.
CREATE OR REPLACE FUNCTION kron.seed_key() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    path text;
    key text;
BEGIN
    SELECT value INTO path FROM kron.settings WHERE settings.key = 'key_file';
    IF path IS NULL THEN
        RAISE EXCEPTION 'kron: no key_file set; run kronctl fleet init --key-file';
    END IF;
    key := btrim(pg_read_file(path), E' \n\r\t');
    IF key !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'kron: % must hold 64 lowercase hex digits', path;
    END IF;
    RETURN key;
END $$;

-- A seed encrypted for storage: OpenPGP (AES-256, with its integrity check) under the seed key.
-- Salted S2K without iteration: the key is 256 random bits, so key stretching would only cost
-- time (0.5 ms a call with the default; 0.01 ms without).
CREATE OR REPLACE FUNCTION kron.seal(seed bytea) RETURNS bytea
LANGUAGE sql SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pgp_sym_encrypt_bytea(seed, kron.seed_key(), 's2k-mode=1, cipher-algo=aes256')
$$;

-- Seconds to wait after `failures` failures: the same arithmetic as otpd's store/throttle.rs.
CREATE OR REPLACE FUNCTION kron.delay_after(failures integer, free integer, base bigint, max bigint)
RETURNS bigint LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN failures < free THEN 0
        ELSE least(max::numeric, base::numeric * power(2::numeric, least(failures - free, 62)))::bigint
    END
$$;

-- RFC 6238: the code of `seed` for time step `step`.
CREATE OR REPLACE FUNCTION kron.totp_code(seed bytea, step bigint, algorithm text, digits integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    h bytea;
    o integer;
    bin bigint;
BEGIN
    h := hmac(int8send(step), seed, lower(algorithm));
    o := get_byte(h, length(h) - 1) & 15;
    bin := ((get_byte(h, o) & 127)::bigint << 24) | (get_byte(h, o + 1)::bigint << 16)
         | (get_byte(h, o + 2)::bigint << 8) | get_byte(h, o + 3)::bigint;
    RETURN lpad((bin % (10::numeric ^ digits)::bigint)::text, digits, '0');
END $$;

-- The step `code` is valid for at `now` within ±skew: the first one after `used`, else the
-- first one (a replay, which the caller refuses); NULL if none. As otpd's totp::matching_step.
CREATE OR REPLACE FUNCTION kron.matching_step(seed bytea, algorithm text, digits integer,
    period integer, skew integer, code text, now bigint, used bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    origin bigint := now / period;
    first bigint;
    step bigint;
BEGIN
    IF code IS NULL OR length(code) <> digits OR code !~ '^[0-9]+$' THEN
        RETURN NULL;
    END IF;
    FOR step IN greatest(origin - skew, 0) .. origin + skew LOOP
        IF kron.totp_code(seed, step, algorithm, digits) = code THEN
            IF first IS NULL THEN
                first := step;
            END IF;
            IF used IS NULL OR step > used THEN
                RETURN step;
            END IF;
        END IF;
    END LOOP;
    RETURN first;
END $$;

-- Charges one attempt unless the user is in backoff (otpd's UserRecord::charge_attempt), on a
-- row locked for the rest of the statement. 0 if allowed, else the time the backoff ends.
CREATE OR REPLACE FUNCTION kron.charge_row(p_name text, p_now bigint, p_free integer,
    p_base bigint, p_max bigint)
RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r kron.users;
    quiet bigint;
    v_failures integer;
    delay bigint;
BEGIN
    INSERT INTO kron.users (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF p_now < r.next_attempt THEN
        RETURN r.next_attempt;
    END IF;
    quiet := greatest(p_now - r.last_attempt, 0) / greatest(p_max, 1);
    v_failures := greatest(r.failures - least(quiet, 2147483647), 0)::integer + 1;
    delay := kron.delay_after(v_failures, p_free, p_base, p_max);
    UPDATE kron.users SET failures = v_failures, last_attempt = p_now,
        next_attempt = CASE WHEN delay = 0 THEN 0 ELSE p_now + delay END,
        version = version + 1
    WHERE name = p_name;
    RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION kron.charge(p_name text, p_now bigint, p_free integer,
    p_base bigint, p_max bigint)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT kron.charge_row(p_name, p_now, p_free, p_base, p_max)
$$;

-- A user as otpd reads it: the row without the seeds (to_jsonb of the row is the cheapest way
-- to build it), with has_token telling whether a confirmed token exists.
CREATE OR REPLACE FUNCTION kron.user_json(r kron.users) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_jsonb(r) - 'seed' - 'pend_seed' || jsonb_build_object('has_token', r.seed IS NOT NULL)
$$;

CREATE OR REPLACE FUNCTION kron.get_user(p_name text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT kron.user_json(u) FROM kron.users u WHERE u.name = p_name
$$;

CREATE OR REPLACE FUNCTION kron.list_users() RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT kron.user_json(u) FROM kron.users u ORDER BY u.name
$$;

-- Checks a TOTP code against the confirmed token and accepts its step at most once, fleet-wide:
-- with p_charge the attempt is charged first (a throttled user gets 'throttled'); the step is
-- taken by a conditional UPDATE that holds only if no later step was used and the token is the
-- one checked (its generation). Outcomes: accepted, replayed, wrong, no-token, throttled.
--
-- With p_charge, the answer is first looked at without changing anything: if it cannot be only
-- a TOTP code (no token, not the token's length, or a code sent for p_sent is live) the outcome
-- is 'not-totp', nothing is charged, and otpd takes its general path. So the common login is
-- one statement.
CREATE OR REPLACE FUNCTION kron.check_code(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, OUT outcome text, OUT until bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r kron.users;
    step bigint;
    taken bigint;
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
END $$;

-- Stores a pending enrollment (seed encrypted here) unless a confirmed token exists.
CREATE OR REPLACE FUNCTION kron.save_pending(p_name text, p_id bytea, p_seed bytea,
    p_algorithm text, p_digits integer, p_period integer, p_created bigint, p_expires bigint,
    p_at_login boolean, p_delivered text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    sealed bytea := kron.seal(p_seed);
BEGIN
    INSERT INTO kron.users (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    UPDATE kron.users SET pend_id = p_id, pend_seed = sealed, pend_algorithm = p_algorithm,
        pend_digits = p_digits, pend_period = p_period, pend_created = p_created,
        pend_expires = p_expires, pend_at_login = p_at_login, pend_delivered = p_delivered,
        version = version + 1
    WHERE name = p_name AND seed IS NULL;
    RETURN FOUND;
END $$;

-- The seed of a pending enrollment begun at a login, so the next login shows the same QR code.
-- Never the seed of a confirmed token.
CREATE OR REPLACE FUNCTION kron.pending_seed(p_name text, p_id bytea, p_now bigint)
RETURNS bytea LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT pgp_sym_decrypt_bytea(u.pend_seed, kron.seed_key()) FROM kron.users u
    WHERE u.name = p_name AND u.pend_id = p_id AND u.pend_at_login
        AND u.seed IS NULL AND p_now < u.pend_expires
$$;

-- Confirms the pending enrollment `p_id` with a code: confirmed, wrong, expired, no-pending,
-- already-enrolled. The attempt was charged before (kron.charge).
CREATE OR REPLACE FUNCTION kron.confirm_code(p_name text, p_id bytea, p_code text,
    p_now bigint, p_skew integer)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r kron.users;
    step bigint;
BEGIN
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'no-pending';
    END IF;
    IF r.pend_id IS DISTINCT FROM p_id OR r.pend_seed IS NULL THEN
        RETURN CASE WHEN r.seed IS NULL THEN 'no-pending' ELSE 'already-enrolled' END;
    END IF;
    step := kron.matching_step(pgp_sym_decrypt_bytea(r.pend_seed, kron.seed_key()),
        r.pend_algorithm, r.pend_digits, r.pend_period, p_skew, p_code, p_now, NULL);
    IF step IS NULL THEN
        RETURN 'wrong';
    END IF;
    IF r.seed IS NOT NULL THEN
        RETURN 'already-enrolled';
    END IF;
    IF p_now >= r.pend_expires THEN
        UPDATE kron.users SET pend_id = NULL, pend_seed = NULL, version = version + 1
        WHERE name = p_name;
        RETURN 'expired';
    END IF;
    UPDATE kron.users SET seed = r.pend_seed, algorithm = r.pend_algorithm, digits = r.pend_digits,
        period = r.pend_period, created = r.pend_created, pend_id = NULL, pend_seed = NULL,
        last_step = step, last_used = p_now, failures = greatest(failures - 1, 0),
        next_attempt = 0, generation = generation + 1, version = version + 1
    WHERE name = p_name;
    RETURN 'confirmed';
END $$;

-- What `kronctl reset` removes; the contact and the send budget stay. True if anything went.
CREATE OR REPLACE FUNCTION kron.reset(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r kron.users;
BEGIN
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE kron.users SET seed = NULL, algorithm = NULL, digits = NULL, period = NULL,
        created = NULL, last_step = NULL, last_used = 0, failures = 0, next_attempt = 0,
        last_attempt = 0, pend_id = NULL, pend_seed = NULL, recovery = NULL,
        outbox = outbox - 'code', generation = generation + 1, version = version + 1
    WHERE name = p_name;
    RETURN r.seed IS NOT NULL OR r.pend_id IS NOT NULL OR r.last_step IS NOT NULL
        OR r.last_used <> 0 OR r.failures <> 0 OR r.next_attempt <> 0 OR r.last_attempt <> 0
        OR r.recovery IS NOT NULL OR coalesce(r.outbox -> 'code', 'null') <> 'null';
END $$;

-- Clears the throttle. True if there was anything to clear.
CREATE OR REPLACE FUNCTION kron.unlock(p_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    had boolean;
BEGIN
    SELECT failures > 0 OR next_attempt > 0 INTO had FROM kron.users
    WHERE name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF had THEN
        UPDATE kron.users SET failures = 0, next_attempt = 0, version = version + 1
        WHERE name = p_name;
    END IF;
    RETURN had;
END $$;

-- Replaces the recovery set. False if the user has no token.
CREATE OR REPLACE FUNCTION kron.set_recovery(p_name text, p_set jsonb) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH changed AS (
        UPDATE kron.users SET recovery = p_set, version = version + 1
        WHERE name = p_name AND seed IS NOT NULL RETURNING 1)
    SELECT EXISTS (SELECT FROM changed)
$$;

-- Uses up the recovery code whose argon2 hash (hex) is p_hash, in one conditional UPDATE:
-- the codes left, or -1 if it is not an unused code of this user.
CREATE OR REPLACE FUNCTION kron.use_recovery(p_name text, p_hash text, p_now bigint)
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH changed AS (
        UPDATE kron.users
        SET recovery = jsonb_set(recovery, '{hashes}', (recovery -> 'hashes') - p_hash),
            last_used = p_now, failures = greatest(failures - 1, 0), next_attempt = 0,
            version = version + 1
        WHERE name = p_name AND seed IS NOT NULL AND recovery -> 'hashes' ? p_hash
        RETURNING jsonb_array_length(recovery -> 'hashes') AS left_over)
    SELECT coalesce((SELECT left_over FROM changed), -1)
$$;

-- The contact, the outbox and the counters a sent code changes, written only if the row is
-- still at `p_version` (NULL: only if there is no row yet). The token, its steps and the seeds
-- are not written here. p_clear_pending drops the pending enrollment. True if written.
CREATE OR REPLACE FUNCTION kron.put_user(p_name text, p_version bigint, p_contact jsonb,
    p_outbox jsonb, p_last_used bigint, p_failures integer, p_next_attempt bigint,
    p_clear_pending boolean)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_version IS NULL THEN
        INSERT INTO kron.users (name, contact, outbox, last_used, failures, next_attempt)
        VALUES (p_name, p_contact, p_outbox, p_last_used, p_failures, p_next_attempt)
        ON CONFLICT DO NOTHING;
        RETURN FOUND;
    END IF;
    UPDATE kron.users SET contact = p_contact, outbox = p_outbox, last_used = p_last_used,
        failures = p_failures, next_attempt = p_next_attempt,
        pend_id = CASE WHEN p_clear_pending THEN NULL ELSE pend_id END,
        pend_seed = CASE WHEN p_clear_pending THEN NULL ELSE pend_seed END,
        version = version + 1
    WHERE name = p_name AND version = p_version;
    RETURN FOUND;
END $$;

-- Stores an imported token (seed encrypted here) unless a token exists and p_replace is false:
-- imported, replaced, kept. When the stored token is the same token, the steps it used stay
-- used and only the recovery codes unused in both survive (as otpd's UserRecord::absorb).
CREATE OR REPLACE FUNCTION kron.import_user(p_name text, p_seed bytea, p_algorithm text,
    p_digits integer, p_period integer, p_created bigint, p_last_step bigint,
    p_last_used bigint, p_recovery jsonb, p_contact jsonb, p_replace boolean)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    r kron.users;
    same boolean := false;
    v_recovery jsonb := p_recovery;
    v_last_step bigint := p_last_step;
    v_last_used bigint := p_last_used;
    result text;
BEGIN
    INSERT INTO kron.users (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR UPDATE;
    IF r.seed IS NOT NULL AND NOT p_replace THEN
        RETURN 'kept';
    END IF;
    result := CASE WHEN r.seed IS NULL THEN 'imported' ELSE 'replaced' END;
    IF r.seed IS NOT NULL THEN
        same := r.algorithm = p_algorithm AND r.digits = p_digits AND r.period = p_period
            AND pgp_sym_decrypt_bytea(r.seed, kron.seed_key()) = p_seed;
    END IF;
    IF same THEN
        v_last_step := CASE WHEN r.last_step IS NULL THEN p_last_step
            WHEN p_last_step IS NULL THEN r.last_step
            ELSE greatest(r.last_step, p_last_step) END;
        v_last_used := greatest(r.last_used, p_last_used);
        IF r.recovery IS NOT NULL AND p_recovery IS NOT NULL
            AND r.recovery -> 'salt' = p_recovery -> 'salt' THEN
            v_recovery := jsonb_set(r.recovery, '{hashes}', coalesce((
                SELECT jsonb_agg(h) FROM jsonb_array_elements(r.recovery -> 'hashes') h
                WHERE (p_recovery -> 'hashes') @> jsonb_build_array(h)), '[]'));
        ELSIF r.recovery IS NOT NULL AND p_recovery IS NOT NULL THEN
            v_recovery := CASE WHEN (r.recovery ->> 'created')::bigint
                >= (p_recovery ->> 'created')::bigint THEN r.recovery ELSE p_recovery END;
        ELSE
            v_recovery := coalesce(r.recovery, p_recovery);
        END IF;
    END IF;
    UPDATE kron.users SET seed = kron.seal(p_seed),
        algorithm = p_algorithm, digits = p_digits, period = p_period, created = p_created,
        last_step = v_last_step, last_used = v_last_used, recovery = v_recovery, pend_id = NULL, pend_seed = NULL, failures = 0,
        next_attempt = 0, last_attempt = 0,
        contact = jsonb_strip_nulls(r.contact) || jsonb_strip_nulls(p_contact),
        generation = CASE WHEN same THEN generation ELSE generation + 1 END,
        version = version + 1
    WHERE name = p_name;
    RETURN result;
END $$;

-- The stored form of a code sent by email or SMS: HMAC-SHA256 under a key derived from the seed
-- key, over length-prefixed (user, purpose, code), so every host computes the same MAC and no
-- host needs the key.
CREATE OR REPLACE FUNCTION kron.code_mac(p_name text, p_purpose text, p_code text)
RETURNS bytea LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT hmac(
        int8send(octet_length(p_name)) || convert_to(p_name, 'UTF8')
            || int8send(octet_length(p_purpose)) || convert_to(p_purpose, 'UTF8')
            || int8send(octet_length(p_code)) || convert_to(p_code, 'UTF8'),
        hmac('kron-sent-code-mac-v1'::bytea, decode(kron.seed_key(), 'hex'), 'sha256'),
        'sha256')
$$;

-- The host name of the calling role, from kron.hosts (the role's own name if it is no host).
CREATE OR REPLACE FUNCTION kron.caller_host() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT host FROM kron.hosts WHERE role = session_user), session_user::text)
$$;

-- Appends decisions to the audit table, the host column filled in from the calling role.
CREATE OR REPLACE FUNCTION kron.audit_write(p_at bigint[], p_event text[], p_user text[],
    p_service text[], p_rhost text[], p_tty text[], p_uid bigint[], p_detail text[])
RETURNS integer LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH added AS (
        INSERT INTO kron.audit (at, host, event, "user", service, rhost, tty, caller_uid, detail)
        SELECT to_timestamp(a.at), kron.caller_host(), left(a.event, 64), left(a.usr, 256),
            left(a.service, 1024), left(a.rhost, 1024), left(a.tty, 1024), a.uid,
            left(a.detail, 1024)
        FROM unnest(p_at, p_event, p_user, p_service, p_rhost, p_tty, p_uid, p_detail)
            AS a(at, event, usr, service, rhost, tty, uid, detail)
        RETURNING 1)
    SELECT count(*)::integer FROM added
$$;

-- What `kronctl fleet status` shows of the database.
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
            FROM pg_stat_replication), '[]'))
$$;

-- The audit rows of one user (or all, p_user NULL), newest first: for `kronctl fleet log`.
CREATE OR REPLACE FUNCTION kron.fleet_log(p_user text, p_limit integer)
RETURNS SETOF kron.audit LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM kron.audit WHERE p_user IS NULL OR "user" = p_user
    ORDER BY at DESC, id DESC LIMIT least(greatest(p_limit, 1), 100000)
$$;

-- Deletes audit rows older than `p_before` (owner only; the audit table refuses it otherwise).
CREATE OR REPLACE FUNCTION kron.prune_audit(p_before timestamptz) RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    gone bigint;
BEGIN
    PERFORM set_config('kron.pruning', 'on', true);
    DELETE FROM kron.audit WHERE at < p_before;
    GET DIAGNOSTICS gone = ROW_COUNT;
    PERFORM set_config('kron.pruning', 'off', true);
    RETURN gone;
END $$;

-- The new function bodies are the owner's; hosts may execute exactly these.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    kron.charge(text, bigint, integer, bigint, bigint),
    kron.get_user(text),
    kron.list_users(),
    kron.check_code(text, text, bigint, integer, boolean, integer, bigint, bigint, text),
    kron.save_pending(text, bytea, bytea, text, integer, integer, bigint, bigint, boolean, text),
    kron.pending_seed(text, bytea, bigint),
    kron.confirm_code(text, bytea, text, bigint, integer),
    kron.reset(text),
    kron.unlock(text),
    kron.set_recovery(text, jsonb),
    kron.use_recovery(text, text, bigint),
    kron.put_user(text, bigint, jsonb, jsonb, bigint, integer, bigint, boolean),
    kron.import_user(text, bytea, text, integer, integer, bigint, bigint, bigint, jsonb, jsonb, boolean),
    kron.code_mac(text, text, text),
    kron.audit_write(bigint[], text[], text[], text[], text[], text[], bigint[], text[]),
    kron.status()
TO kron_host;
GRANT EXECUTE ON FUNCTION kron.fleet_log(text, integer), kron.status() TO kron_auditor;
