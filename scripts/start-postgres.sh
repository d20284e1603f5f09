#!/usr/bin/env bash
# Start the local PostgreSQL cluster if it is not accepting connections, and wait for it.
set -euo pipefail
host="${PGHOST:-127.0.0.1}"; port="${PGPORT:-5432}"
ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }
if ! ready; then
  if command -v pg_ctlcluster >/dev/null && [[ -d /etc/postgresql ]]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
ready || { echo "error: PostgreSQL is not reachable on $host:$port" >&2; exit 1; }
