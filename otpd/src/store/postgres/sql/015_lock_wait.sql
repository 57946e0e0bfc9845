-- kron fleet schema, version 15: a host role waits at most 2 s for a row another transaction
-- holds (lock_timeout, a setting of the role; 5 s since version 7).
--
-- A host now gives up on a login's statement after 3 s instead of 10 s (and on a connect after
-- 1.5 s), so that a database that goes silent (its machine dead, a firewall that drops) leaves
-- a login time to be checked offline within pam_kron's default timeout of 5 s. A lock wait
-- must end before that statement timeout: then it fails alone and refuses its own login only,
-- where a timeout would count as the database away and close both of the host's connections.
-- `kronctl fleet init` gives the new setting to every host role of this fleet (host_role_ready
-- is false for a role with the old one), `kronctl fleet add-host` to each new one. No function
-- a host calls changes: hosts of any version work with it.

CREATE OR REPLACE FUNCTION kron.set_host_role(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('ALTER ROLE %I SET synchronous_commit = %L', p_role, 'on');
    EXECUTE format('ALTER ROLE %I SET lock_timeout = %L', p_role, '2s');
END $$;
REVOKE ALL ON FUNCTION kron.set_host_role(name) FROM PUBLIC;

-- Whether p_role has the settings kron.set_host_role gives (for any database).
CREATE OR REPLACE FUNCTION kron.host_role_ready(p_role name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = p_role AND s.setdatabase = 0
            AND 'synchronous_commit=on' = ANY (s.setconfig)
            AND 'lock_timeout=2s' = ANY (s.setconfig))
$$;
REVOKE ALL ON FUNCTION kron.host_role_ready(name) FROM PUBLIC;
