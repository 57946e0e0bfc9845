-- kron fleet schema, version 10: the throttle runs on the database's clock. A code check and a
-- charge wrote the calling host's clock into the user's row: a failure on a host whose clock
-- ran hours ahead (a broken NTP, a hardware clock in local time read as UTC) set next_attempt
-- to that host's future plus the backoff, and every host of the fleet then refused the user
-- until then. Now last_attempt, next_attempt, last_used and a used step's time are the
-- database's now, and the throttle is judged against it; the host's clock still picks which
-- code is expected (p_now), as in local mode. (Version 9 did the same for replayed offline
-- entries, taking the earlier of the two clocks because those happened in the past.)
-- Otherwise as in versions 4 (kron.charge_row) and 6 (kron.check_one); both keep their
-- arguments, and their callers (kron.charge, kron.check_code, kron.check_codes) are unchanged.
-- A row whose last failure a host's clock already dated ahead gets the database's now as that
-- time (below), so its failures are forgiven on the usual schedule again; a wait already set
-- that far ahead lasts until `kronctl unlock`, as before.

CREATE OR REPLACE FUNCTION kron.charge_row(p_name text, p_now bigint, p_free integer,
    p_base bigint, p_max bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    r kron.users;
    v_now bigint := kron.db_now();
    quiet bigint;
    v_failures integer;
    delay bigint;
BEGIN
    INSERT INTO kron.users (name) VALUES (p_name) ON CONFLICT DO NOTHING;
    SELECT * INTO r FROM kron.users u WHERE u.name = p_name FOR UPDATE;
    IF v_now < r.next_attempt THEN
        RETURN r.next_attempt;
    END IF;
    quiet := greatest(v_now - r.last_attempt, 0) / greatest(p_max, 1);
    v_failures := greatest(r.failures
        - least(quiet, 2147483647), 0)::integer + 1;
    delay := kron.delay_after(v_failures, p_free, p_base, p_max);
    UPDATE kron.users u SET failures = v_failures, last_attempt = v_now,
        next_attempt = CASE WHEN delay = 0 THEN 0 ELSE v_now + delay END,
        version = u.version + 1
    WHERE u.name = p_name;
    RETURN 0;
END $$;

CREATE OR REPLACE FUNCTION kron.check_one(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, p_key text, p_host text,
    OUT outcome text, OUT until bigint, OUT accepted_step bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r kron.users;
    v_now bigint := kron.db_now();
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
        IF v_now < r.next_attempt THEN
            outcome := 'throttled';
            until := r.next_attempt;
            RETURN;
        END IF;
        quiet := greatest(v_now - r.last_attempt, 0) / greatest(p_max, 1);
        v_failures := greatest(r.failures - least(quiet, 2147483647), 0)::integer + 1;
    END IF;
    step := kron.matching_step(
        public.pgp_sym_decrypt_bytea(r.seed, coalesce(p_key, kron.seed_key())),
        r.algorithm, r.digits, r.period, least(greatest(p_skew, 0), 2), p_code, p_now,
        r.last_step);
    IF step IS NOT NULL AND (r.last_step IS NULL OR step > r.last_step) THEN
        -- The charge and its refund with the accepted step: one new row version.
        UPDATE kron.users u SET last_step = step, last_used = v_now,
            failures = greatest(coalesce(v_failures, u.failures) - 1, 0), next_attempt = 0,
            last_attempt = CASE WHEN p_charge THEN v_now ELSE u.last_attempt END,
            version = u.version + 1
        WHERE u.name = p_name;
        outcome := 'accepted';
        accepted_step := step;
        v_host := coalesce(p_host, kron.caller_host());
        IF EXISTS (SELECT FROM kron.offline_packs p WHERE p.name = p_name AND p.host <> v_host
                AND p.generation = r.generation AND p.until_step >= step) THEN
            INSERT INTO kron.used_steps (name, step, host, at, offline)
            VALUES (p_name, step, v_host, v_now, false) ON CONFLICT DO NOTHING;
        END IF;
        RETURN;
    END IF;
    IF p_charge THEN
        v_delay := kron.delay_after(v_failures, p_free, p_base, p_max);
        UPDATE kron.users u SET failures = v_failures, last_attempt = v_now,
            next_attempt = CASE WHEN v_delay = 0 THEN 0 ELSE v_now + v_delay END,
            version = u.version + 1
        WHERE u.name = p_name;
    END IF;
    outcome := CASE WHEN step IS NULL THEN 'wrong' ELSE 'replayed' END;
END $$;

UPDATE kron.users SET last_attempt = kron.db_now(), version = version + 1
WHERE last_attempt > kron.db_now();
