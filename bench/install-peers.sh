#!/usr/bin/env bash
# install-peers.sh: install the programs goinit is benchmarked against, for
# `make bench` and for CI: tini, dumb-init, wrk and (when node is missing)
# nodejs and npm from Debian, pm2 from npm into .cache/npm (git-ignored).
# Idempotent: it installs only what is missing. Run as root from anywhere.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
for pkg in tini dumb-init wrk; do
	command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
# Node and npm run the Node cluster and pm2 figures and the fault app.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
	echo "install-peers: apt-get install ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
if [[ ! -x "$root/.cache/npm/node_modules/.bin/pm2-runtime" ]]; then
	echo "install-peers: npm install pm2 into .cache/npm"
	mkdir -p "$root/.cache/npm"
	npm install --prefix "$root/.cache/npm" --no-audit --no-fund pm2
fi
