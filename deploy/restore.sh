#!/usr/bin/env bash
# Restore a backup into a database, replacing what is there: deploy/restore.sh POSTGRES_URL FILE.dump
# Stop the bots first; afterwards run `hoctap db upgrade` (a backup of an older version is brought up to date).
# One transaction: if anything fails, the database is left as it was. A backup of an older version goes into a
# newly created database (an upgraded one has tables the backup does not know, which --clean cannot drop).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 POSTGRES_URL FILE.dump" >&2; exit 2; }
url="${1/postgresql+psycopg:/postgresql:}"  # HOCTAP_DATABASE_URL as it is: libpq knows no "+psycopg"
exec pg_restore --clean --if-exists --no-owner --single-transaction --dbname="$url" "$2"
