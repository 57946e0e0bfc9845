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
-- Applied to every host of this fleet now, and by `kronctl fleet add-host` to each new one.

CREATE OR REPLACE FUNCTION kron.set_host_role(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SET synchronous_commit = %L', p_role, 'on');
    EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', p_role, '5s');
END $$;
REVOKE ALL ON FUNCTION kron.set_host_role(name) FROM PUBLIC;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT h.role FROM kron.hosts h JOIN pg_roles p ON p.rolname = h.role LOOP
        PERFORM kron.set_host_role(r.role);
    END LOOP;
END $$;
