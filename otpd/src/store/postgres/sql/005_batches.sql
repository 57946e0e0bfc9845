-- kron fleet schema, version 5: what several logins on one host ask at the same moment is asked
-- in one statement (docs/fleet.md, "Decisions"): their code checks (kron.check_codes) and their
-- users' rows (kron.get_users). Each code is checked exactly as kron.check_code checks it, and
-- each row read as kron.get_user reads it; what changes is that a statement's fixed costs (the
-- trip, parse and plan, TLS, two wake-ups) and a check's commit (its WAL flush) are paid once
-- for all of them. The functions of version 4 stay, with the same arguments and outcomes.
--
-- * kron.check_one holds the check itself (version 4's check_code, with the skew a host may ask
--   for bounded to the 0 to 2 steps otpd's configuration allows): kron.check_code and
--   kron.check_codes both call it. Owner only, like the other helpers, so it carries no SET
--   clause and runs under its caller's search_path.
-- * kron.check_codes locks the users' rows in one order (by name, byte-wise), whatever order the
--   host sent them in: two batches on two hosts that share users then wait for each other
--   instead of deadlocking. Every other function locks at most one kron.users row.
-- * A row stays locked until the batch commits, so a guess raced on another host for the same
--   user waits for the batch and sees its outcome, as it waits for a single check.
-- * A batch waits at most 100 ms for a row another transaction holds (lock_timeout): then it
--   fails as a whole, rolls back, and otpd sends each of its checks alone. One busy row (a race
--   for one user, an admin's open transaction) so delays only its own login, not 63 others.
-- * At most 64 entries per call, as otpd sends.

CREATE OR REPLACE FUNCTION kron.check_one(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, OUT outcome text, OUT until bigint, OUT accepted_step bigint)
LANGUAGE plpgsql AS $$
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
        r.algorithm, r.digits, r.period, least(greatest(p_skew, 0), 2), p_code, p_now,
        r.last_step);
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

-- As in version 4 (same arguments, same outcomes), through kron.check_one.
CREATE OR REPLACE FUNCTION kron.check_code(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, OUT outcome text, OUT until bigint, OUT accepted_step bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT c.outcome, c.until, c.accepted_step INTO outcome, until, accepted_step
    FROM kron.check_one(p_name, p_code, p_now, p_skew, p_charge, p_free, p_base, p_max,
        p_sent) c;
END $$;

-- Several checks in one transaction: entry k of every array is one check_code call; the result
-- has one row per entry, `k` its position (from 1) in the arrays.
CREATE FUNCTION kron.check_codes(p_names text[], p_codes text[], p_nows bigint[],
    p_skews integer[], p_charges boolean[], p_frees integer[], p_bases bigint[],
    p_maxes bigint[], p_sents text[])
RETURNS TABLE (k integer, outcome text, until bigint, accepted_step bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := coalesce(cardinality(p_names), 0);
    c record;
BEGIN
    IF n > 64 THEN
        RAISE EXCEPTION 'kron: at most 64 codes per check_codes call, not %', n;
    END IF;
    IF coalesce(cardinality(p_codes), 0) <> n OR coalesce(cardinality(p_nows), 0) <> n
            OR coalesce(cardinality(p_skews), 0) <> n
            OR coalesce(cardinality(p_charges), 0) <> n
            OR coalesce(cardinality(p_frees), 0) <> n
            OR coalesce(cardinality(p_bases), 0) <> n
            OR coalesce(cardinality(p_maxes), 0) <> n
            OR coalesce(cardinality(p_sents), 0) <> n THEN
        RAISE EXCEPTION 'kron: check_codes needs arrays of one length';
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    FOR c IN SELECT a.name, a.k::integer AS k FROM unnest(p_names) WITH ORDINALITY AS a(name, k)
            ORDER BY a.name COLLATE "C", a.k LOOP
        k := c.k;
        SELECT o.outcome, o.until, o.accepted_step INTO outcome, until, accepted_step
        FROM kron.check_one(c.name, p_codes[c.k], p_nows[c.k], p_skews[c.k], p_charges[c.k],
            p_frees[c.k], p_bases[c.k], p_maxes[c.k], p_sents[c.k]) o;
        RETURN NEXT;
    END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    kron.check_codes(text[], text[], bigint[], integer[], boolean[], integer[], bigint[],
        bigint[], text[])
TO kron_host;

-- Several users' rows in one statement, as kron.get_user returns each (no seed): one row per
-- entry, `k` its position (from 1), `user_row` NULL for a user the fleet does not know.
CREATE FUNCTION kron.get_users(p_names text[])
RETURNS TABLE (k integer, user_row jsonb)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF coalesce(cardinality(p_names), 0) > 64 THEN
        RAISE EXCEPTION 'kron: at most 64 users per get_users call, not %',
            cardinality(p_names);
    END IF;
    RETURN QUERY
    SELECT a.k::integer, CASE WHEN u.name IS NULL THEN NULL ELSE kron.user_json(u) END
    FROM unnest(p_names) WITH ORDINALITY AS a(name, k)
    LEFT JOIN kron.users u ON u.name = a.name;
END $$;

REVOKE ALL ON FUNCTION kron.get_users(text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kron.get_users(text[]) TO kron_host;
