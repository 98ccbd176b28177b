#!/usr/bin/env bash
# demo.sh GOINIT [PORT]: an agent beside the workers. goinit runs as PID 1 of
# a new PID namespace (as in a container) with the Node agent
# (examples/agent/node/agent.js) and two workers of the Node app (app.js),
# each binding PORT itself (server.listen(PORT)). Every 500 ms the agent broadcasts a
# new config version over goinit's channel; every worker serves the last one
# it got. The demo shows the version advance, the same on both workers,
# SIGKILLs the agent (goinit restarts it, the workers keep serving), then
# stops goinit with SIGTERM and shows its exit code. Every wait is bounded.
set -euo pipefail
goinit=$1 port=${2:-${PORT:-8090}}
dir=$(cd "$(dirname "$0")" && pwd)
node=$(command -v node) || { echo "demo-agent: node is not on PATH; install Node.js 18 or later" >&2; exit 1; }
goinit_pid='' outer=''
cleanup() { [[ -z $goinit_pid$outer ]] || kill -KILL $goinit_pid $outer 2>/dev/null || true; }
trap cleanup EXIT

# get PATH: one HTTP request on a new connection, with bash's /dev/tcp so the
# demo needs no HTTP client. Prints the body.
get() {
	exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
	sed '1,/^\r$/d' <&3
	exec 3<&-
}
# round: eight concurrent requests (one idle worker tends to win every
# sequential accept), each distinct answer once.
round() {
	{
		for _ in 1 2 3 4 5 6 7 8; do get / & done
		wait
	} 2>/dev/null | sort -u | sed 's/^/   /'
}
# Any thread of goinit may have forked a child: read every thread's list.
children() { cat "/proc/$1"/task/*/children 2>/dev/null || true; }
# agent: the host pid of goinit's child that runs as the agent, if any.
agent() {
	local k
	for k in $(children "$goinit_pid"); do
		tr '\0' '\n' <"/proc/$k/environ" 2>/dev/null | grep -qx GOINIT_ROLE=agent && { echo "$k"; return; }
	done
	return 0
}
# nspid PID: the pid of host process PID as goinit's namespace sees it.
nspid() { awk '$1 == "NSpid:" {print $NF}' "/proc/$1/status" 2>/dev/null; }

ns=()
if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null; then
	ns=(unshare --pid --fork --mount-proc)
else
	echo "== not root: goinit runs as a subreaper instead of PID 1"
fi
cmd=("$goinit" --workers=2 --ready=message --stop-timeout=5s "--agent='$node' '$dir/node/agent.js'" -- "$node" "$dir/node/app.js")
echo "== PORT=$port ${ns[*]} ${cmd[*]}"
PORT=$port "${ns[@]}" "${cmd[@]}" &
outer=$!
goinit_pid=$outer
if ((${#ns[@]})); then
	for _ in $(seq 100); do goinit_pid=$(children "$outer" | awk '{print $1}'); [[ -n $goinit_pid ]] && break; sleep 0.05; done
fi
for _ in $(seq 200); do [[ $(get /healthz 2>/dev/null) == ok ]] && break; sleep 0.05; done

for i in 1 2 3; do
	echo "== requests, round $i: both workers serve the agent's current version"
	round
	sleep 0.6
done

victim=$(agent)
[[ -n $victim ]] || { echo "demo-agent: goinit (pid $goinit_pid) has no agent; see its log above" >&2; exit 1; }
echo "== SIGKILL the agent (pid $(nspid "$victim") in goinit's namespace); the workers keep serving its last version"
kill -KILL "$victim"
round
new=''
for _ in $(seq 100); do new=$(agent); [[ -n $new && $new != "$victim" ]] && break; sleep 0.05; done
[[ -n $new && $new != "$victim" ]] || { echo "demo-agent: goinit did not restart the agent within 5 s" >&2; exit 1; }
new_ns=$(nspid "$new")
echo "== goinit restarted the agent as pid $new_ns; the workers, not restarted, get its versions"
for _ in $(seq 100); do [[ $(get / 2>/dev/null) == *"agent pid $new_ns" ]] && break; sleep 0.05; done
round
sleep 0.6
round

echo "== SIGTERM to goinit: workers stop first, then the agent; goinit exits with their status"
kill -TERM "$goinit_pid"
set +e
wait $outer
code=$?
set -e
goinit_pid='' outer=''
echo "== goinit exited with $code"
