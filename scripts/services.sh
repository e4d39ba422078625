#!/usr/bin/env bash
# Start the PostgreSQL and Redis the integration tests use, when they are not already running, then
# check a real login on each (the tests' own URLs), so that a refused login stops `make test` here.
set -euo pipefail
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  command -v pg_ctlcluster >/dev/null || apt-get install -y -q postgresql >/dev/null
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || apt-get install -y -q redis-server >/dev/null
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi
# the tests log in as postgres over TCP with no password (tests/service/conftest.py: trust auth on 127.0.0.1)
if ! out=$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -w -tAc 'select 1' 2>&1) || [ "$out" != 1 ]; then
  echo "services.sh: PostgreSQL at 127.0.0.1:5432 refused the tests' login (user postgres, no password): $out" >&2
  echo "services.sh: allow it in pg_hba.conf, e.g. 'host all postgres 127.0.0.1/32 trust', and reload" >&2
  exit 1
fi
if ! out=$(redis-cli -h 127.0.0.1 -p 6379 ping 2>&1) || [ "$out" != PONG ]; then
  echo "services.sh: Redis at 127.0.0.1:6379 did not answer PING with PONG: $out" >&2
  exit 1
fi
echo "services.sh: PostgreSQL login as postgres ok; Redis PING ok"
