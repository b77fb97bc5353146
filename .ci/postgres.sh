#!/usr/bin/env bash
# Make sure PostgreSQL answers on 127.0.0.1:5432 as user postgres without a password:
# install it if missing, start the cluster if it is down, switch loopback auth to trust.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  echo "ci: installing PostgreSQL"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba=/etc/postgresql/$version/main/pg_hba.conf
# loopback lines (host ... 127.0.0.1/32 and ::1/128) -> trust
as_root sed -i -E 's#^(host[[:space:]]+[^[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' "$hba"

if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  echo "ci: starting PostgreSQL $version"
  as_root pg_ctlcluster "$version" main start
fi
as_root pg_ctlcluster "$version" main reload

for _ in $(seq 1 60); do
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    psql -h 127.0.0.1 -U postgres -Atc 'select version()' | head -c 60; echo
    exit 0
  fi
  sleep 0.5
done
echo "ci: PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
