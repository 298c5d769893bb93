#!/usr/bin/env bash
# Make sure what the tests need is on this machine: PostgreSQL answering on TEST_DATABASE_URL's
# address (started, or installed from Debian's packages and started) and Debian's chromium for
# the browser tests. Idempotent; quick when everything is already there.
set -uo pipefail

need_root() { [ "$(id -u)" = 0 ] || { echo "ensure-services: not root, cannot install $1" >&2; return 1; }; }
apt_updated=0
apt_install() {
  need_root "$*" || return 1
  if [ "$apt_updated" = 0 ]; then apt-get update -qq >/dev/null 2>&1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
  python3 -c "import socket; socket.create_connection(('127.0.0.1', 5432), 2)" 2>/dev/null; }

if ! pg_up; then
  echo "ensure-services: PostgreSQL is not answering on 127.0.0.1:5432; starting it"
  if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "ensure-services: installing Debian's postgresql"
    apt_install postgresql || true
  fi
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  if [ -n "$ver" ]; then
    conf=/etc/postgresql/$ver/main
    # Trust auth on loopback, as on the developer machines.
    if [ -f "$conf/pg_hba.conf" ] && ! grep -q "webapp-ci" "$conf/pg_hba.conf"; then
      sed -i '1i host all all 127.0.0.1/32 trust # webapp-ci\nhost all all ::1/128 trust # webapp-ci\nlocal all all trust # webapp-ci' "$conf/pg_hba.conf"
    fi
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || \
      pg_ctlcluster "$ver" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  if pg_up; then
    psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 || \
      psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || \
      su postgres -c "psql -c 'CREATE DATABASE test'" >/dev/null 2>&1 || true
  else
    echo "ensure-services: PostgreSQL could not be started" >&2
  fi
fi

if [ ! -x /usr/bin/chromium ]; then
  echo "ensure-services: installing Debian's chromium for the browser tests"
  apt_install chromium || echo "ensure-services: chromium could not be installed" >&2
fi
exit 0
