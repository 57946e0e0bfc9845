-- kron fleet schema, version 12: an answer for a name that is no account costs the database a
-- commit, as a real account's does. A wrong code for an account is charged in the database
-- (one statement, one row version, one commit), so its reply waits for a round trip and a WAL
-- flush; the answer for a name this host's NSS does not know was charged in otpd's memory
-- only, and came back sooner by that much, telling the two apart. kron.pace writes one small
-- row of the calling host, so the refusal waits for the same kind of commit. The rows are
-- spread over 16 slots per host, so concurrent answers of one host do not queue on one row
-- lock (a queue would be a difference again). Nothing reads them: the table holds at most 16
-- rows per host, each rewritten in place.

CREATE TABLE kron.pacing (
    host text NOT NULL,
    slot integer NOT NULL,
    writes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (host, slot)
);

CREATE FUNCTION kron.pace() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO kron.pacing AS p (host, slot, writes)
    VALUES (kron.caller_host(), floor(random() * 16)::integer, 1)
    ON CONFLICT (host, slot) DO UPDATE SET writes = p.writes + 1;
END $$;

REVOKE ALL ON FUNCTION kron.pace() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kron.pace() TO kron_host;
