#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the dashboard's browser test drives it headless
# (tests/node/test_dashboard_browser.py fails without it). Nothing is started here.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
  echo "ci: installing chromium"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium >/dev/null
fi
