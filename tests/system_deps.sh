#!/usr/bin/env bash
# The system programs the tests start (real Redis, Postgres, nginx, wrk, Chromium, tinyproxy as the
# forward proxy of the egress tests, openssl for their throwaway CA): installed with
# apt-get when missing and this user may (root or passwordless sudo). Otherwise says what to install.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v chromium >/dev/null || need+=(chromium)
command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ] || need+=(tinyproxy)
command -v openssl >/dev/null || need+=(openssl)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo -n"
if command -v apt-get >/dev/null && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
  echo "installing test dependencies: ${need[*]}"
  $sudo apt-get update -qq >/dev/null 2>&1 || true
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing test dependencies: ${need[*]} (install them, e.g. apt-get install -y ${need[*]})" >&2
  exit 1
fi
