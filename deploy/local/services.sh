#!/usr/bin/env bash
# What `make run` and `make test` need beside Python, on this machine: Java 17+ and
# Maven (to fetch and run the local Apache Kafka), PostgreSQL and Redis on their default
# local ports; for the SDK tests, Node.js, npm and Chromium. Installs what is missing
# (Debian's packages, as root), starts what is not running, lets local connections in
# without a password (trust on loopback) and gives the current user a PostgreSQL role
# that may create databases. Safe to run again.
set -euo pipefail

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need+=(postgresql)
# The SDK tests: Node.js runs the JavaScript SDKs, headless Chromium the browser ones.
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
[ -x /usr/bin/chromium ] || need+=(chromium)
if ((${#need[@]})); then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${need[*]}; install them (Debian: apt-get install ${need[*]}) and run this again" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  [ -d "/etc/postgresql/$version/main" ] || pg_createcluster "$version" main >/dev/null
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "^# traitstream: local trust" "$hba"; then
    # First match wins: trust on loopback ahead of the package's password rules.
    { echo "# traitstream: local trust"
      echo "host all all 127.0.0.1/32 trust"
      echo "host all all ::1/128 trust"
      echo "local all all trust"
      cat "$hba"; } > "$hba.new"
    mv "$hba.new" "$hba"
    chown postgres:postgres "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
for _ in $(seq 1 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.1; done
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "PostgreSQL did not start on 127.0.0.1:5432" >&2; exit 1; }
user=$(id -un)
if [ "$user" != postgres ]; then
  as_postgres psql -h 127.0.0.1 -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_roles WHERE rolname = '$user'" | grep -q 1 \
    || as_postgres psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE ROLE \"$user\" LOGIN SUPERUSER"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /tmp/traitstream-redis
  redis-server --daemonize yes --bind "127.0.0.1 -::1" --port 6379 --save "" --appendonly no \
    --dir /tmp/traitstream-redis --logfile /tmp/traitstream-redis/redis.log
fi
for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
echo "PostgreSQL and Redis are up on 127.0.0.1 (5432, 6379); Java $(java -version 2>&1 | head -1 | cut -d'"' -f2)"
