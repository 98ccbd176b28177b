#!/usr/bin/env bash
# install-deps.sh: install what goinit's tests need on a fresh Debian machine,
# as root: runc and busybox-static (the OCI container tests), qemu (the
# cgroup v2 VM), util-linux (unshare), and, through bench/install-peers.sh,
# what the bench harness's tiny run compares against (tini, dumb-init, wrk,
# Node and pm2). make installs staticcheck itself.
# Idempotent: it installs only what is missing, so `make test` stays fast.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

want=(runc busybox-static qemu-system-x86 xz-utils util-linux file prometheus systemd python3)
missing=()
for pkg in "${want[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "install-deps: missing ${missing[*]}; run as root (sudo make deps)" >&2
		exit 1
	fi
	echo "install-deps: apt-get install ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

bash "$root/bench/install-peers.sh"

