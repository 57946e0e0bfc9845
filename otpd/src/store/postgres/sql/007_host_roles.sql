-- kron fleet schema, version 7: settings every host role logs in with, set on the role itself,
-- so that they hold however its sessions reach the server (directly, or through PgBouncer in
-- transaction mode, where a session's own SET does not reach the server connection that runs
-- its next statement):
-- * synchronous_commit = on: a commit that accepts a code waits for the disk (and for a
--   synchronous standby), whatever the server's or the database's default;
-- * lock_timeout = 5s: a statement waits at most 5 s for a row another transaction holds (an
--   admin's open transaction), then fails alone, refusing its own login only, well before the
--   host gives up on it (10 s) and, with it, on both of its connections. kron.check_codes
--   still sets its own 100 ms for its transaction.
-- `kronctl fleet init` gives them to every host role of this fleet that lacks them (on every
-- run, so a role it could not alter gets them once the owner may), and `kronctl fleet add-host`
-- to each new one.

CREATE OR REPLACE FUNCTION kron.set_host_role(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SET synchronous_commit = %L', p_role, 'on');
    EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', p_role, '5s');
END $$;
REVOKE ALL ON FUNCTION kron.set_host_role(name) FROM PUBLIC;

-- Whether p_role has the settings kron.set_host_role gives (for any database).
CREATE OR REPLACE FUNCTION kron.host_role_ready(p_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = p_role AND s.setdatabase = 0
            AND 'synchronous_commit=on' = ANY (s.setconfig)
            AND 'lock_timeout=5s' = ANY (s.setconfig))
$$;
REVOKE ALL ON FUNCTION kron.host_role_ready(name) FROM PUBLIC;
