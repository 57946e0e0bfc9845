-- kron fleet schema, version 13: the users a page at a time, for `kronctl list` (ListPage) and
-- a streamed export. kron.list_users() answers every user in one statement, all of which the
-- host then holds in memory at once: at a fleet of a million users more than otpd may use.
-- kron.list_users_after answers only the `p_limit` users after the name `p_after` ('' for the
-- first), in the order kron.list_users() has, read along the primary key's index.

CREATE FUNCTION kron.list_users_after(p_after text, p_limit integer) RETURNS SETOF jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT kron.user_json(u) FROM kron.users u WHERE u.name > p_after ORDER BY u.name
    LIMIT greatest(p_limit, 0)
$$;

REVOKE ALL ON FUNCTION kron.list_users_after(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kron.list_users_after(text, integer) TO kron_host;
