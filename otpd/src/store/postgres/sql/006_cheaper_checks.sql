-- kron fleet schema, version 6: the same checks for less of the database's CPU
-- (docs/performance.md, "Fleet mode"). Arguments and outcomes of every function a host calls are
-- unchanged; an otpd of version 5 works on this schema and the other way round.
--
-- * kron.check_codes reads the seed key file and the calling host's name once per statement
--   and hands both to each check, instead of every check reading the file (a table read, a file
--   read, a pattern match) and, for an accepted code, looking up the host again.
-- * kron.matching_step computes each candidate step's code in its own loop instead of calling
--   kron.totp_code, a PL/pgSQL function, once per step: the same arithmetic, without the cost of
--   a function call up to five times per check. kron.totp_code stays for the offline packs.
-- * kron.matching_step bounds the skew to the 0 to 2 steps otpd's configuration allows, for every
--   caller: version 5 bounded it for code checks only, and a host could still ask
--   kron.confirm_code (or version 3's offline replay) for a skew that keeps the database
--   computing HMACs while it holds the user's row.
--
-- pgbench on a 2-core machine, eight wrong codes per check_codes call (three steps each),
-- alternated: 2,431 to 2,570 calls/s on version 5, 2,638 to 2,856 on version 6.

CREATE OR REPLACE FUNCTION kron.matching_step(seed bytea, algorithm text, digits integer,
    period integer, skew integer, code text, now bigint, used bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    origin bigint := now / period;
    alg text := pg_catalog.lower(algorithm);
    modulus bigint;
    first bigint;
    step bigint;
    h bytea;
    o integer;
BEGIN
    IF code IS NULL OR pg_catalog.length(code) <> digits OR code !~ '^[0-9]+$' THEN
        RETURN NULL;
    END IF;
    modulus := (10::numeric ^ digits)::bigint;
    skew := least(greatest(skew, 0), 2);
    step := greatest(origin - skew, 0);
    WHILE step <= origin + skew LOOP
        -- RFC 6238 (as kron.totp_code): HMAC of the step, dynamic truncation, `digits` digits.
        h := public.hmac(pg_catalog.int8send(step), seed, alg);
        o := pg_catalog.get_byte(h, pg_catalog.length(h) - 1) & 15;
        IF pg_catalog.lpad(((((pg_catalog.get_byte(h, o) & 127)::bigint << 24)
                | (pg_catalog.get_byte(h, o + 1)::bigint << 16)
                | (pg_catalog.get_byte(h, o + 2)::bigint << 8)
                | pg_catalog.get_byte(h, o + 3)::bigint) % modulus)::text, digits, '0') = code
        THEN
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

-- Version 5's check_one with two more arguments: the seed key and the calling host's name, each
-- read here, when needed, if the caller passes NULL (kron.check_code does).
DROP FUNCTION kron.check_one(text, text, bigint, integer, boolean, integer, bigint, bigint, text);

CREATE FUNCTION kron.check_one(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, p_key text, p_host text,
    OUT outcome text, OUT until bigint, OUT accepted_step bigint)
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
    step := kron.matching_step(
        public.pgp_sym_decrypt_bytea(r.seed, coalesce(p_key, kron.seed_key())),
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
        v_host := coalesce(p_host, kron.caller_host());
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

CREATE OR REPLACE FUNCTION kron.check_code(p_name text, p_code text, p_now bigint,
    p_skew integer, p_charge boolean, p_free integer, p_base bigint, p_max bigint,
    p_sent text, OUT outcome text, OUT until bigint, OUT accepted_step bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT c.outcome, c.until, c.accepted_step INTO outcome, until, accepted_step
    FROM kron.check_one(p_name, p_code, p_now, p_skew, p_charge, p_free, p_base, p_max,
        p_sent, NULL, NULL) c;
END $$;

-- As in version 5; the key and the host are read once, before the first row is locked. A batch
-- whose key file cannot be read fails whole, and otpd then sends each check alone
-- (kron.check_code), which reads the file only for a user with a token, as before.
CREATE OR REPLACE FUNCTION kron.check_codes(p_names text[], p_codes text[], p_nows bigint[],
    p_skews integer[], p_charges boolean[], p_frees integer[], p_bases bigint[],
    p_maxes bigint[], p_sents text[])
RETURNS TABLE (k integer, outcome text, until bigint, accepted_step bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := coalesce(cardinality(p_names), 0);
    v_key text;
    v_host text;
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
    IF n = 0 THEN
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', '100ms', true);
    v_key := kron.seed_key();
    v_host := kron.caller_host();
    FOR c IN SELECT a.name, a.k::integer AS k FROM unnest(p_names) WITH ORDINALITY AS a(name, k)
            ORDER BY a.name COLLATE "C", a.k LOOP
        k := c.k;
        SELECT o.outcome, o.until, o.accepted_step INTO outcome, until, accepted_step
        FROM kron.check_one(c.name, p_codes[c.k], p_nows[c.k], p_skews[c.k], p_charges[c.k],
            p_frees[c.k], p_bases[c.k], p_maxes[c.k], p_sents[c.k], v_key, v_host) o;
        RETURN NEXT;
    END LOOP;
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kron FROM PUBLIC;
