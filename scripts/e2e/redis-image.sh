#!/usr/bin/env bash
# The chart's Redis for scripts/e2e.sh, from Debian's redis-server (there is no registry to pull
# redis:7.4-alpine from): the binary, its `ldd` closure and the loader, user 999 (the chart's
# runAsUser), /data; its entrypoint is redis-server, so the chart's args (`--appendonly yes
# --dir /data --requirepass …`) work as with the official image.
#   redis-image.sh ROOT OUT.tar TAG
set -euo pipefail
root="$1"
out="$2"
tag="$3"
fs="$(mktemp -d)"
trap 'rm -rf "$fs"' EXIT
server=$(command -v redis-server) || { echo "redis-image.sh: redis-server is not installed (scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$fs/usr/bin" "$fs/data" "$fs/tmp" "$fs/etc"
chmod 1777 "$fs/tmp"
install -m 0755 "$(readlink -f "$server")" "$fs/usr/bin/redis-server"
ldd "$fs/usr/bin/redis-server" | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}' | sort -u |
  while read -r lib; do
    mkdir -p "$fs$(dirname "$lib")"
    cp -L "$lib" "$fs$lib"
  done
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nredis:x:999:999::/data:/usr/sbin/nologin\n' >"$fs/etc/passwd"
printf 'root:x:0:\nredis:x:999:\n' >"$fs/etc/group"
python3 "$root/scripts/e2e/mkimage.py" "$fs" "$out" "$tag" \
  --entrypoint '["/usr/bin/redis-server"]' --user 999:999 --env PATH=/usr/bin:/bin >/dev/null
