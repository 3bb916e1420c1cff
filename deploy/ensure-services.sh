#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the integration tests need, if they are not running already, and
# install Debian's chromium for the dashboard's browser tests (tests/dashboard) when it is missing.
# Under CI=true a server that cannot be started is a failure (the tests then fail, never skip); so is a
# missing browser, in the browser tests themselves.
set -uo pipefail

CHROMIUM=${POLYCERT_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    echo "ensure-services: installing chromium (apt-get) for the dashboard's browser tests" >&2
    if ! { apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; }; then
      echo "ensure-services: apt-get install chromium failed; the browser tests skip (fail under CI=true)" >&2
    fi
  elif command -v apt-get >/dev/null; then
    echo "ensure-services: $CHROMIUM is missing and installing it needs root (apt-get install -y chromium)" >&2
  else
    echo "ensure-services: $CHROMIUM is missing and there is no apt-get to install it; the browser tests skip (fail under CI=true)" >&2
  fi
fi
# the fault tests (tests/integration/test_faults.py) start and restart servers of their own: they need the
# redis-server binary and PostgreSQL's initdb / pg_ctl (Debian's redis-server and postgresql packages)
apt_install() {  # package...: install with apt-get when missing and root; say so otherwise
  if command -v apt-get >/dev/null && [ "$(id -u)" = "0" ]; then
    echo "ensure-services: installing $* (apt-get)" >&2
    apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; } \
      || echo "ensure-services: apt-get install $* failed; the tests that need it skip (fail under CI=true)" >&2
  else
    echo "ensure-services: $* missing and cannot be installed here (needs root and apt-get)" >&2
  fi
}
command -v redis-server >/dev/null || apt_install redis-server
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null || apt_install postgresql
pg_up() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if ! redis_up; then
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
fi
for _ in $(seq 1 30); do
  pg_up && redis_up && break
  sleep 1
done
status=0
pg_up || { echo "ensure-services: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; status=1; }
redis_up || { echo "ensure-services: Redis is not reachable on 127.0.0.1:6379" >&2; status=1; }
if [ "$status" -ne 0 ] && [ "${CI:-}" = "true" ]; then exit 1; fi
exit 0
