-- kron fleet schema, version 14: what a host may learn through the functions it calls is
-- bounded to what its own logins need. No function's arguments or answer type change: hosts of
-- any version work with it.
--
-- * A pending enrollment begun at a login is shown again only to the host that began it.
--   kron.pending_seed decrypted the pending seed for any host that named the enrollment's id,
--   and every host reads every id (kron.get_user, kron.list_users, kron.list_users_after): one
--   compromised host could collect, unnoticed, the seed of every enrollment begun on any host,
--   which becomes the user's confirmed token. kron.save_pending now records the saving host
--   (pend_host, from the calling role, never from what a host says), kron.pending_seed answers
--   only that host, and judges the enrollment's expiry by the database's clock instead of the
--   caller's p_now (kept as an argument for older hosts, and ignored). Every function that
--   drops a pending enrollment drops its host with it. A login on another host starts a new
--   enrollment, as it does when the old one has expired. An enrollment pending at the upgrade
--   has no host recorded and is shown again nowhere: its user's next login starts a new one.
-- * ALTER DEFAULT PRIVILEGES IN SCHEMA kron ... REVOKE ... FROM PUBLIC (version 2) changed
--   nothing: a default scoped to a schema can only add to the global default, which lets PUBLIC
--   execute every new function. What kept functions from PUBLIC was each migration's own
--   REVOKE. Now the global default of the role that runs the migrations (the owner) no longer
--   grants PUBLIC EXECUTE on the functions it creates, and `kronctl fleet init` checks after
--   every run that no function in schema kron is executable by PUBLIC.

ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

ALTER TABLE kron.users ADD COLUMN pend_host text;

-- A user as otpd reads it (version 4), without the host of the pending enrollment either.
CREATE OR REPLACE FUNCTION kron.user_json(r kron.users) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.to_jsonb(r) - 'seed' - 'pend_seed' - 'pend_host'
        || pg_catalog.jsonb_build_object('has_token', r.seed IS NOT NULL)
$$;

-- Stores a pending enrollment (seed encrypted here) unless a confirmed token exists, with the
-- host that saved it.
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
        pend_host = kron.caller_host(), version = version + 1
    WHERE name = p_name AND seed IS NULL;
    RETURN FOUND;
END $$;

-- The seed of a pending enrollment begun at a login, so the next login on the same host shows
-- the same QR code: only to the host that saved it, only until it expires by the database's
-- clock (p_now is ignored), never the seed of a confirmed token. NULL otherwise.
CREATE OR REPLACE FUNCTION kron.pending_seed(p_name text, p_id bytea, p_now bigint)
RETURNS bytea LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT public.pgp_sym_decrypt_bytea(u.pend_seed, kron.seed_key()) FROM kron.users u
    WHERE u.name = p_name AND u.pend_id = p_id AND u.pend_at_login
        AND u.seed IS NULL AND kron.db_now() < u.pend_expires
        AND u.pend_host = kron.caller_host()
$$;

-- As in version 2; a pending enrollment dropped drops its host.
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
        UPDATE kron.users SET pend_id = NULL, pend_seed = NULL, pend_host = NULL,
            version = version + 1
        WHERE name = p_name;
        RETURN 'expired';
    END IF;
    UPDATE kron.users SET seed = r.pend_seed, algorithm = r.pend_algorithm, digits = r.pend_digits,
        period = r.pend_period, created = r.pend_created, pend_id = NULL, pend_seed = NULL,
        pend_host = NULL, last_step = step, last_used = p_now, failures = greatest(failures - 1, 0),
        next_attempt = 0, generation = generation + 1, version = version + 1
    WHERE name = p_name;
    RETURN 'confirmed';
END $$;

-- As in version 2; the pending enrollment goes with its host.
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
        last_attempt = 0, pend_id = NULL, pend_seed = NULL, pend_host = NULL, recovery = NULL,
        outbox = outbox - 'code', generation = generation + 1, version = version + 1
    WHERE name = p_name;
    RETURN r.seed IS NOT NULL OR r.pend_id IS NOT NULL OR r.last_step IS NOT NULL
        OR r.last_used <> 0 OR r.failures <> 0 OR r.next_attempt <> 0 OR r.last_attempt <> 0
        OR r.recovery IS NOT NULL OR coalesce(r.outbox -> 'code', 'null') <> 'null';
END $$;

-- As in version 2; p_clear_pending drops the pending enrollment's host too.
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
        pend_host = CASE WHEN p_clear_pending THEN NULL ELSE pend_host END,
        version = version + 1
    WHERE name = p_name AND version = p_version;
    RETURN FOUND;
END $$;

-- As in version 2; an imported token drops the pending enrollment with its host.
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
        last_step = v_last_step, last_used = v_last_used, recovery = v_recovery, pend_id = NULL,
        pend_seed = NULL, pend_host = NULL, failures = 0, next_attempt = 0, last_attempt = 0,
        contact = jsonb_strip_nulls(r.contact) || jsonb_strip_nulls(p_contact),
        generation = CASE WHEN same THEN generation ELSE generation + 1 END,
        version = version + 1
    WHERE name = p_name;
    RETURN result;
END $$;

-- CREATE OR REPLACE kept every function's grants; nothing new is granted.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
