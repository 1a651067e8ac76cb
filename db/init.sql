-- rs-search: the two roles of a shared study database (db/README.md, "Roles").
--
--   rs_owner   owns the tables; runs `rs-search db upgrade` (Optuna's schema and ours).
--   rs_worker  what `rs-search start` / `rs-search worker` / the dashboard connect as: reads and
--              writes rows of every table, creates none, alters none.
--
-- Neither is a superuser, and neither may create databases or roles.
--
-- Run it as a superuser, connected to the study database, with both passwords in the environment
-- (psql 15 or newer, for \getenv):
--
--   RS_OWNER_PASSWORD=... RS_WORKER_PASSWORD=... \
--     psql -v ON_ERROR_STOP=1 -h HOST -U postgres -d rs_search -f db/init.sql
--
-- The postgres image runs it on the first start of db/compose.yaml. Running it again is safe: it
-- creates what is missing, sets the passwords again (a way to rotate them) and re-grants.

\set ON_ERROR_STOP on
\getenv owner_password RS_OWNER_PASSWORD
\getenv worker_password RS_WORKER_PASSWORD
\if :{?owner_password}
\else
  \set owner_password ''
\endif
\if :{?worker_password}
\else
  \set worker_password ''
\endif

-- 12 characters: a project heuristic against an empty or placeholder password, not a policy.
SELECT length(:'owner_password') < 12 AS owner_weak,
       length(:'worker_password') < 12 AS worker_weak,
       :'owner_password' = :'worker_password' AS same_password
\gset
\if :owner_weak
  DO $$ BEGIN RAISE EXCEPTION 'db/init.sql: set RS_OWNER_PASSWORD (12 characters or more)'; END $$;
\endif
\if :worker_weak
  DO $$ BEGIN RAISE EXCEPTION 'db/init.sql: set RS_WORKER_PASSWORD (12 characters or more)'; END $$;
\endif
\if :same_password
  DO $$ BEGIN RAISE EXCEPTION 'db/init.sql: RS_OWNER_PASSWORD and RS_WORKER_PASSWORD must differ'; END $$;
\endif

BEGIN;

SELECT 'CREATE ROLE rs_owner' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rs_owner')
\gexec
SELECT 'CREATE ROLE rs_worker' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rs_worker')
\gexec
ALTER ROLE rs_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'owner_password';
ALTER ROLE rs_worker LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'worker_password';

-- Only these two roles connect to the study database.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database())
\gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO rs_owner, rs_worker', current_database())
\gexec

-- Tables live in the public schema (Optuna's and ours); only the owner creates them.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO rs_owner;
GRANT USAGE ON SCHEMA public TO rs_worker;

-- Rows: what a worker does to a study (trials, attributes, heartbeats, the latency cache, its
-- claims). Sequences: the serial ids of new rows.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO rs_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO rs_worker;
-- ... and the same on every table and sequence the owner creates later (a migration, a new
-- Optuna table, the first `rs-search db upgrade` on an empty database).
ALTER DEFAULT PRIVILEGES FOR ROLE rs_owner IN SCHEMA public
  GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO rs_worker;
ALTER DEFAULT PRIVILEGES FOR ROLE rs_owner IN SCHEMA public
  GRANT USAGE, SELECT ON SEQUENCES TO rs_worker;

COMMIT;
