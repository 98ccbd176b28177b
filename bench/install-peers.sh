#!/usr/bin/env bash
# install-peers.sh: install the programs goinit is benchmarked against, for
# `make bench` and for CI: tini, dumb-init and wrk from Debian, pm2 from npm
# into .cache/npm (git-ignored). Node itself must already be on the machine.
# Idempotent: it installs only what is missing. Run as root from anywhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
for pkg in tini dumb-init wrk; do
	command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
	echo "install-peers: apt-get install ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	echo "install-peers: node and npm are needed for the Node cluster and pm2 figures" >&2
	exit 1
fi
if [[ ! -x "$root/.cache/npm/node_modules/.bin/pm2-runtime" ]]; then
	echo "install-peers: npm install pm2 into .cache/npm"
	mkdir -p "$root/.cache/npm"
	npm install --prefix "$root/.cache/npm" --no-audit --no-fund pm2
fi
