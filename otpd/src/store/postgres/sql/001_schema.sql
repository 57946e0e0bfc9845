-- kron fleet schema, version 1: tables, roles and the audit table's guard.
-- Applied by `kronctl fleet init` as the database owner, inside one transaction, once.
-- Hosts never touch these tables: they may only execute the functions of 002_functions.sql.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE SCHEMA IF NOT EXISTS kron;
REVOKE ALL ON SCHEMA kron FROM PUBLIC;

-- Settings of this fleet: schema_version, key_file (the seed key's path on the database server).
CREATE TABLE kron.settings (
    key text PRIMARY KEY,
    value text NOT NULL
);

-- Which database role is which host: the audit table's host column comes from here, never
-- from what a host says about itself.
CREATE TABLE kron.hosts (
    role name PRIMARY KEY,
    host text NOT NULL UNIQUE,
    created timestamptz NOT NULL DEFAULT now()
);

-- One row per user: what a sled record holds, with the seeds encrypted under the key file.
CREATE TABLE kron.users (
    name text PRIMARY KEY,
    -- Bumped by every change: optimistic writes of the contact and the outbox check it.
    version bigint NOT NULL DEFAULT 0,
    -- Bumped whenever the token changes (confirm, reset, import): a code checked against an
    -- older token can never be accepted for the new one.
    generation bigint NOT NULL DEFAULT 0,
    seed bytea,
    algorithm text,
    digits integer,
    period integer,
    created bigint,
    last_step bigint,
    last_used bigint NOT NULL DEFAULT 0,
    failures integer NOT NULL DEFAULT 0,
    next_attempt bigint NOT NULL DEFAULT 0,
    last_attempt bigint NOT NULL DEFAULT 0,
    -- The pending enrollment: pend_id names it (hosts hold the id, never the seed).
    pend_id bytea,
    pend_seed bytea,
    pend_algorithm text,
    pend_digits integer,
    pend_period integer,
    pend_created bigint,
    pend_expires bigint,
    pend_at_login boolean,
    pend_delivered text,
    -- RecoverySet, ContactInfo and Outbox as otpd serialises them (hex hashes and MACs).
    recovery jsonb,
    contact jsonb NOT NULL DEFAULT '{}',
    outbox jsonb NOT NULL DEFAULT '{}'
);

-- Every decision of every host. Insert-only: hosts insert through kron.audit_write; nobody
-- updates, and only kron.prune_audit (owner) deletes.
CREATE TABLE kron.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    host text NOT NULL,
    event text NOT NULL,
    "user" text NOT NULL DEFAULT '',
    service text NOT NULL DEFAULT '',
    rhost text NOT NULL DEFAULT '',
    tty text NOT NULL DEFAULT '',
    caller_uid bigint NOT NULL DEFAULT 0,
    detail text NOT NULL DEFAULT ''
);
CREATE INDEX audit_user_at ON kron.audit ("user", at);
CREATE INDEX audit_at ON kron.audit (at);

CREATE FUNCTION kron.audit_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('kron.pruning', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'kron.audit is insert-only (prune with kron.prune_audit)';
END $$;
CREATE TRIGGER audit_insert_only BEFORE UPDATE OR DELETE ON kron.audit
    FOR EACH ROW EXECUTE FUNCTION kron.audit_guard();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON kron.audit
    FOR EACH STATEMENT EXECUTE FUNCTION kron.audit_guard();

-- Group roles: every host role is a member of kron_host; kron_auditor may read the audit
-- table through kron.fleet_log (grant it to a login role for `kronctl fleet log`).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kron_host') THEN
        CREATE ROLE kron_host NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kron_auditor') THEN
        CREATE ROLE kron_auditor NOLOGIN;
    END IF;
END $$;
GRANT USAGE ON SCHEMA kron TO kron_host, kron_auditor;
