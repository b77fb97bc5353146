#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries are installed (the test suite starts a
# throwaway server of its own from them). Nothing is configured or started here.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctl >/dev/null 2>&1 && [ -z "$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null)" ]; then
  echo "ci: installing the PostgreSQL server binaries"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi
