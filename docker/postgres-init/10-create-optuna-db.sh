#!/usr/bin/env bash
# Runs once, on the first start of an EMPTY postgres data volume (official
# image's /docker-entrypoint-initdb.d hook). The entrypoint has already created
# the MLflow database ($POSTGRES_DB) owned by $POSTGRES_USER; this adds the
# Optuna database ($OPTUNA_DB, default "optuna") with the same owner.
#
# If the volume already exists this script is NOT re-run; create the database
# by hand instead:
#   docker compose exec postgres createdb -U "$POSTGRES_USER" optuna
#
# No `set -u` / `exit`: the entrypoint may source (not exec) this file.
set -eo pipefail

optuna_db="${OPTUNA_DB:-optuna}"

psql -v ON_ERROR_STOP=1 \
     --username "$POSTGRES_USER" \
     --dbname "$POSTGRES_DB" \
     --set=db="$optuna_db" <<'EOSQL'
SELECT format('CREATE DATABASE %I OWNER %I', :'db', current_user)
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db')\gexec
EOSQL
