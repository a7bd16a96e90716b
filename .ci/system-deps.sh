#!/usr/bin/env bash
# Debian packages the tests drive for real. As root on Debian: install what is missing. Otherwise: name it.
set -euo pipefail
packages=(prometheus prometheus-alertmanager prometheus-node-exporter chromium tmux systemd earlyoom)
binaries=(/usr/bin/promtool /usr/bin/prometheus-alertmanager /usr/bin/prometheus-node-exporter /usr/bin/chromium /usr/bin/tmux /usr/bin/systemd-analyze /usr/bin/earlyoom)
missing=()
for i in "${!packages[@]}"; do
  [ -x "${binaries[$i]}" ] || missing+=("${packages[$i]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # earlyoom is a peer in bench/guard_protect.py only, run in its own namespaces: never as a host-wide killer here.
  if command -v systemctl >/dev/null && systemctl is-enabled earlyoom >/dev/null 2>&1; then
    systemctl disable --now earlyoom >/dev/null 2>&1 || true
  fi
else
  echo "missing Debian packages (install them as root): ${missing[*]}" >&2
  echo "tests that need them fail when CI=true, and are skipped with this reason otherwise" >&2
fi
