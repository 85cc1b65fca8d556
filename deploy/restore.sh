#!/usr/bin/env bash
# Restore a backup into a database, replacing what is there: deploy/restore.sh POSTGRES_URL FILE.dump
# Stop the bots first; afterwards run `hoctap db upgrade` (a backup of an older version is brought up to date).
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 POSTGRES_URL FILE.dump" >&2; exit 2; }
exec pg_restore --clean --if-exists --no-owner --exit-on-error --dbname="$1" "$2"
