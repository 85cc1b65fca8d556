#!/usr/bin/env bash
# Back up the database to one file: deploy/backup.sh postgresql://USER:PASSWORD@HOST:5432/DB FILE.dump
# (custom format: compressed, restorable table by table). Safe while the bots run.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 POSTGRES_URL FILE.dump" >&2; exit 2; }
url="${1/postgresql+psycopg:/postgresql:}"  # HOCTAP_DATABASE_URL as it is: libpq knows no "+psycopg"
exec pg_dump --format=custom --no-owner --file="$2" "$url"
