-- kron fleet schema, version 11: a pack and an online check of the same user are ordered by
-- the user's row. Before, kron.offline_pack read the row without a lock, hashed for up to
-- 0.6 s, and recorded the pack. A code accepted on another host in between was missed twice:
-- the pack still held its step as unused (so it could pass once more offline here, until the
-- next round of floors), and the check, not seeing the pack yet, kept no row in
-- kron.used_steps (so the double use, if it came, went unreported). Now the pack reads the
-- row again once its hashes are made, under a share lock held until it commits: a check
-- holding the row commits first and the pack sees its step, or waits for the pack and then
-- sees it and keeps the row. The lock is held for the insert and the commit only, never for
-- the hashing. A token reset or replaced meanwhile yields no hashes (they are the old
-- token's): the host gets the new generation, and the next round fetches its pack.
-- The function now runs without `public` in its path and names pgcrypto's functions with
-- their schema, as the login path's do (version 4). Its arguments and answer are unchanged.

CREATE OR REPLACE FUNCTION kron.offline_pack(p_name text, p_from bigint, p_count integer)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
    v_generation bigint;
BEGIN
    SELECT * INTO r FROM kron.users WHERE name = p_name;
    IF NOT FOUND OR r.seed IS NULL THEN
        DELETE FROM kron.offline_packs WHERE name = p_name AND host = v_host;
        RETURN NULL;
    END IF;
    v_generation := r.generation;
    SELECT value::bigint INTO v_max FROM kron.settings WHERE key = 'offline_max_window';
    SELECT value::integer INTO v_cost FROM kron.settings WHERE key = 'offline_cost';
    v_cost := least(greatest(coalesce(v_cost, 6), 4), 12);
    v_from := greatest(p_from, v_now / r.period - 2);
    -- About 0.6 s of bcrypt a statement at any cost (120 hashes at cost 6, one at 12): a
    -- statement stays well inside the host's 10 s, and the host asks again for the rest.
    v_last := least(v_from + least(greatest(p_count, 0), 480, greatest(7680 >> v_cost, 1)) - 1,
        (v_now + greatest(coalesce(v_max, 28800), 0)) / r.period);
    v_setting := public.gen_salt('bf', v_cost);
    IF v_last >= v_from THEN
        v_seed := public.pgp_sym_decrypt_bytea(r.seed, kron.seed_key());
        SELECT array_agg(substr(public.crypt('kron-offline-v1:' || s || ':'
                || kron.totp_code(v_seed, s, r.algorithm, r.digits), v_setting), 30) ORDER BY s)
        INTO v_hashes FROM generate_series(v_from, v_last) s;
    END IF;
    -- The row as it is now, locked until the commit (see above).
    SELECT * INTO r FROM kron.users WHERE name = p_name FOR SHARE;
    IF NOT FOUND OR r.seed IS NULL THEN
        DELETE FROM kron.offline_packs WHERE name = p_name AND host = v_host;
        RETURN NULL;
    END IF;
    IF r.generation <> v_generation THEN
        v_hashes := '{}';
        v_last := v_from - 1;
    END IF;
    IF v_last >= v_from THEN
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
