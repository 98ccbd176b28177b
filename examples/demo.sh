#!/usr/bin/env bash
# demo.sh GOINIT SERVER [PORT]: goinit's main job on the example server.
# goinit runs as PID 1 of a new PID namespace (as in a container) with two
# workers of an unmodified server, each binding 127.0.0.1:PORT itself;
# goinit answers their bind() with one socket it holds (--share-ports, on by
# default with --workers). The demo sends requests, SIGKILLs a worker
# under traffic (goinit restarts it; no request fails), then stops goinit
# with SIGTERM and shows its exit code.
set -euo pipefail
goinit=$1 server=$2 port=${3:-${PORT:-8080}}
codes=$(mktemp)
goinit_pid='' outer=''
cleanup() {
	[[ -z $goinit_pid$outer ]] || kill -KILL $goinit_pid $outer 2>/dev/null || true
	rm -f "$codes"
}
trap cleanup EXIT

# get PATH: one HTTP request on a new connection, with bash's /dev/tcp so the
# demo needs no HTTP client. Prints the body.
get() {
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
	sed '1,/^\r$/d' <&3
	exec 3<&-
}
# status: the HTTP status code of GET /, or 000 when the request failed.
status() {
	local line
	{ exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET / HTTP/1.0\r\n\r\n' >&3 && read -r _ line _ <&3 && exec 3<&-; } 2>/dev/null
	echo "${line:-000}"
}

ns=()
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null; then
	ns=(unshare --pid --fork --mount-proc)
	echo "== goinit as PID 1 of a new PID namespace: HOST=127.0.0.1 PORT=$port ${ns[*]} $goinit --workers=2 -- $server"
else
	echo "== not root: goinit runs as a subreaper instead of PID 1"
fi
# The server binds $HOST:$PORT itself, as any server does: no --listen.
HOST=127.0.0.1 PORT=$port "${ns[@]}" "$goinit" --workers=2 -- "$server" &
outer=$!
# Any thread of goinit may have forked a worker: read every thread's list.
children() { cat "/proc/$1"/task/*/children 2>/dev/null || true; }
goinit_pid=$outer
if ((${#ns[@]})); then
	for _ in $(seq 100); do goinit_pid=$(children "$outer" | awk '{print $1}'); [[ -n $goinit_pid ]] && break; sleep 0.05; done
fi
for _ in $(seq 100); do [[ $(status) == 200 ]] && break; sleep 0.05; done

echo "== four requests; the kernel spreads them over the workers"
for _ in 1 2 3 4; do get /; done

victim=$(children "$goinit_pid" | awk 'NF {print $1; exit}')
echo "== SIGKILL worker process $victim while 200 requests run"
( for _ in $(seq 200); do status; done ) >"$codes" &
load=$!
kill -KILL "$victim"
wait $load
echo "   answers: $(sort "$codes" | uniq -c | awk '{printf "%s x HTTP %s  ", $1, $2}')"
# The children lists include zombies: wait until goinit has reaped the
# victim, then until its replacement is there.
for _ in $(seq 100); do
	kids=" $(children "$goinit_pid" | tr -s '\n' ' ') "
	[[ $kids != *" $victim "* ]] && (($(wc -w <<<"$kids") == 2)) && break
	sleep 0.05
done
echo "== workers now: $(children "$goinit_pid")"

echo "== SIGTERM to goinit: workers drain and exit, goinit exits with their status"
kill -TERM "$goinit_pid"
set +e
wait $outer
code=$?
set -e
goinit_pid='' outer=''
echo "== goinit exited with $code"
