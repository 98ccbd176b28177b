# goinit's per-worker limits on cgroup v2, one scenario after another, each
# ending in verdicts (see internal/vmtest). It runs as root in the root
# cgroup of a cgroup2-only hierarchy with no controller enabled in the root's
# cgroup.subtree_control. Every wait has a deadline.
#
# Files: /bin/goinit, /bin/limitworker (init/testdata/limitworker),
# /bin/cgroup.test (the cgroup package's tests, go test -c) and
# /lib/modules/brd.ko (the RAM disk driver of the kernel's package).

CG=/sys/fs/cgroup
D=/tmp/triggers # trigger files for limitworker serve
PORT=8080
FORK_BOMB='n=0; while [ $n -lt 100 ]; do sleep 30 & n=$((n+1)); echo "started $n"; done; echo "no fork failed"'
mkdir -p $D

now() { date +%s; }

# until_ok SECONDS CMD [ARG...]: run CMD every 100ms until it succeeds;
# return 1 once SECONDS have passed.
until_ok() {
	_end=$(($(now) + $1 + 1))
	shift
	until "$@"; do
		[ "$(now)" -lt "$_end" ] || return 1
		sleep 0.1
	done
}

# start_in CGROUP NAME ARGS...: start goinit in the background as the only
# process of $CG/CGROUP, as a container runtime would; its stdout goes to
# /tmp/NAME.out and its log to /tmp/NAME.log. Sets GPID.
start_in() {
	_cg=$CG/$1 _name=$2
	shift 2
	sh -c 'echo $$ > "$0/cgroup.procs" && exec /bin/goinit "$@"' "$_cg" "$@" >/tmp/$_name.out 2>/tmp/$_name.log &
	GPID=$!
}

# run_in CGROUP NAME ARGS...: run goinit in the foreground like start_in,
# with a deadline, and set RC to its exit status.
run_in() {
	_cg=$CG/$1 _name=$2
	shift 2
	timeout 30 sh -c 'echo $$ > "$0/cgroup.procs" && exec /bin/goinit "$@"' "$_cg" "$@" >/tmp/$_name.out 2>/tmp/$_name.log
	RC=$?
}

# gone PID: the process has exited (it is a zombie until waited for).
gone() { ! [ -e /proc/$1/stat ] || grep -q '^[0-9]* ([^)]*) Z' /proc/$1/stat; }

# wait_exit PID SECONDS: wait for PID and set RC to its exit status, or
# kill it and set RC=timeout after SECONDS.
wait_exit() {
	if until_ok $2 gone $1; then
		wait $1
		RC=$?
	else
		kill -9 $1
		wait $1
		RC=timeout
	fi
}

# show NAME: print goinit's output of a run, for the console log.
show() {
	echo "--- /tmp/$1.out"
	cat /tmp/$1.out
	echo "--- /tmp/$1.log"
	cat /tmp/$1.log
}

# logged FILE TEXT: FILE has a line containing TEXT.
logged() { grep -qF -- "$2" "$1"; }

# serving_pid NAME ID: the pid in the last "serving worker ID pid PID" line.
serving_pid() { sed -n "s/^serving worker $2 pid //p" /tmp/$1.out | tail -n 1; }

# serving NAME ID [OLD_PID]: worker ID serves, with a pid other than OLD_PID.
serving() {
	_p=$(serving_pid $1 $2)
	[ -n "$_p" ] && [ "$_p" != "${3:-}" ]
}

# get: one HTTP request to the workers; prints the reply's body. (busybox
# wget crashes here, looking up the "http" service without NSS files.)
get() { printf 'GET / HTTP/1.0\r\n\r\n' | timeout 5 nc 127.0.0.1 $PORT 2>/dev/null | tail -n 1; }

# answers SECONDS REPLY...: ask the workers at $PORT, a new connection each
# time, until each REPLY has come back.
answers() {
	_end=$(($(now) + $1 + 1))
	shift
	for _want in "$@"; do
		until [ "$(get)" = "$_want" ]; do
			[ "$(now)" -lt "$_end" ] || return 1
		done
	done
}

# cleaned CGROUP SUBTREE NAME: the verdict that goinit, now exited, left
# CGROUP as it found it: no goinit cgroup below it, its subtree_control back
# to SUBTREE, no process in it.
cleaned() {
	_left=$(find $CG/$1 -mindepth 1 -type d -name 'goinit*')
	_st=$(cat $CG/$1/cgroup.subtree_control)
	_procs=$(cat $CG/$1/cgroup.procs)
	if [ -z "$_left" ] && [ "$_st" = "$2" ] && [ -z "$_procs" ]; then
		pass $3 "nothing left in /$1; subtree_control back to '$2'"
	else
		fail $3 "left: $_left; /$1 subtree_control '$_st' (was '$2'); processes in it: $_procs"
	fi
}

# mib BYTES: BYTES in MiB, for a verdict.
mib() { awk -v b=$1 'BEGIN { printf "%.1fMiB", b / 1048576 }'; }

# memstat CGROUP: read the memory of the cgroup directory CGROUP as v2
# exposes it. Sets CUR (memory.current) and WS, the working set the kubelet
# counts and --memory-recycle compares: memory.current minus memory.stat's
# inactive_file; and MEMSTAT, both with inactive_file and anon, for a verdict.
memstat() {
	CUR=$(cat $1/memory.current 2>/dev/null)
	_inact=$(awk '$1 == "inactive_file" { print $2 }' $1/memory.stat 2>/dev/null)
	_anon=$(awk '$1 == "anon" { print $2 }' $1/memory.stat 2>/dev/null)
	CUR=${CUR:-0} _inact=${_inact:-0} _anon=${_anon:-0}
	WS=$((CUR - _inact))
	MEMSTAT="memory.current $(mib $CUR) - inactive_file $(mib $_inact) = working set $(mib $WS) (anon $(mib $_anon))"
}

# stop_workers NAME CLEANUP: stop goinit ($GPID, started in /ctr as NAME,
# with --workers) by SIGTERM; it must exit 0, its workers' deaths by the stop
# signal being no failure, and leave /ctr as it found it (verdict CLEANUP).
stop_workers() {
	kill -TERM $GPID
	wait_exit $GPID 30
	[ "$RC" = 0 ] || { show $1; fail $1-exit "goinit exit $RC after SIGTERM, want 0"; }
	cleaned ctr "$st" $2
}

# one_line NAME PATTERN: the verdict that /tmp/NAME.log is exactly one line
# matching the extended regular expression PATTERN.
one_line() {
	if [ "$(wc -l </tmp/$2.log)" = 1 ] && grep -qE -- "$3" /tmp/$2.log; then
		pass $1 "$(cat /tmp/$2.log)"
	else
		show $2
		fail $1 "want one line matching $3; got: $(cat /tmp/$2.log)"
	fi
}

# --- The cgroup package's own tests, while the root's subtree_control is
# still empty, so they enable controllers themselves.
st=$(cat $CG/cgroup.subtree_control)
if CI=true timeout 100 /bin/cgroup.test -test.v -test.count=1 >/tmp/cgroup-test.txt 2>&1; then
	skipped=$(sed -n 's/^ *--- SKIP: \([^ ]*\).*/\1/p' /tmp/cgroup-test.txt | tr '\n' ' ')
	pass cgroup-library "$(grep -c '^--- PASS' /tmp/cgroup-test.txt) tests passed; skipped: ${skipped:-none}"
else
	cat /tmp/cgroup-test.txt
	fail cgroup-library "$(grep -E '^ *--- FAIL|^FAIL|panic' /tmp/cgroup-test.txt | tr '\n' ' ')"
fi
if [ "$(cat $CG/cgroup.subtree_control)" = "$st" ] && [ -z "$(find $CG -mindepth 1 -type d -name 'goinit*')" ]; then
	pass cgroup-library-cleanup "root subtree_control back to '$st', no goinit cgroup left"
else
	fail cgroup-library-cleanup "root subtree_control '$(cat $CG/cgroup.subtree_control)', left: $(find $CG -mindepth 1 -type d -name 'goinit*')"
fi

# --- A container's cgroup: controllers delegated to it, nothing enabled
# below it yet.
echo "+cpu +memory +pids" >$CG/cgroup.subtree_control
mkdir $CG/ctr
st=$(cat $CG/ctr/cgroup.subtree_control)

# --- The command is in its slot's cgroup from its first instruction:
# clone3 starts it there.
run_in ctr placed --memory-limit=64Mi -- cat /proc/self/cgroup
if [ "$RC" = 0 ] && grep -qE '^0::/ctr/goinit-[0-9]+/worker-0$' /tmp/placed.out; then
	pass placed "$(cat /tmp/placed.out)"
else
	show placed
	fail placed "exit $RC, /proc/self/cgroup: $(cat /tmp/placed.out)"
fi
cleaned ctr "$st" cleanup-placed

# --- Every limit on one spinning command.
start_in ctr spin --memory-limit=64Mi --memory-high=32Mi --cpu-limit=0.2 --pids-limit=16 -- /bin/limitworker spin
base=$CG/ctr/goinit-$GPID
W=$base/worker-0
if until_ok 20 grep -qs . $W/cgroup.procs; then
	wpid=$(cat $W/cgroup.procs)
	gcg=$(cat /proc/$GPID/cgroup) wcg=$(cat /proc/$wpid/cgroup)
	if [ "$gcg" = "0::/ctr/goinit-$GPID/supervisor" ] && [ "$wcg" = "0::/ctr/goinit-$GPID/worker-0" ] &&
		[ "$(cat $CG/ctr/cgroup.procs)" = "" ]; then
		pass leaf "goinit in $gcg, worker in $wcg, none left in /ctr"
	else
		fail leaf "goinit in '$gcg', worker in '$wcg', in /ctr: $(cat $CG/ctr/cgroup.procs)"
	fi
	for c in cpu memory pids; do
		grep -qw $c $CG/ctr/cgroup.subtree_control && grep -qw $c $base/cgroup.subtree_control || ctrl_missing="$ctrl_missing $c"
	done
	if [ -z "${ctrl_missing:-}" ]; then
		pass controllers "enabled in /ctr and $base: $(cat $base/cgroup.subtree_control)"
	else
		fail controllers "not enabled:$ctrl_missing (/ctr: $(cat $CG/ctr/cgroup.subtree_control); base: $(cat $base/cgroup.subtree_control))"
	fi
	got="max=$(cat $W/memory.max) swap=$(cat $W/memory.swap.max) cpu=$(cat $W/cpu.max) pids=$(cat $W/pids.max)"
	want="max=67108864 swap=0 cpu=20000 100000 pids=16"
	if [ "$got" = "$want" ]; then pass limits-written "$got"; else fail limits-written "got $got, want $want"; fi
	if [ "$(cat $W/memory.high)" = 33554432 ]; then
		pass memory-high "memory.high $(cat $W/memory.high)"
	else
		fail memory-high "memory.high $(cat $W/memory.high), want 33554432 (32Mi)"
	fi
	# A measurement window, not a wait: 2s is 20 CFS periods.
	usec() { awk '$1 == "usage_usec" { print $2 }' $W/cpu.stat; }
	up() { awk '{ print $1 }' /proc/uptime; }
	u0=$(usec) t0=$(up)
	sleep 2
	u1=$(usec) t1=$(up)
	cpus=$(awk -v a=$u0 -v b=$u1 -v s=$t0 -v e=$t1 'BEGIN { printf "%.3f", (b - a) / 1e6 / (e - s) }')
	# The upper bound is the point; the lower one only shows it ran.
	if awk -v r=$cpus 'BEGIN { exit !(r >= 0.05 && r <= 0.3) }'; then
		pass cpu-limit "$cpus CPUs under --cpu-limit=0.2 (cpu.stat usage_usec)"
	else
		fail cpu-limit "$cpus CPUs under --cpu-limit=0.2, want about 0.2"
	fi
else
	show spin
	fail leaf "no process in $W"
fi
kill -TERM $GPID
wait_exit $GPID 30
[ "$RC" = 143 ] || { show spin; fail spin-exit "goinit exit $RC, want 143 (the spinner dies of SIGTERM)"; }
cleaned ctr "$st" cleanup-spin

# --- Two workers; one outgrows --memory-limit, then a child of the other.
rm -f $D/*
start_in ctr oom --workers=2 --listen=127.0.0.1:$PORT --memory-limit=64Mi -- /bin/limitworker serve $D
if until_ok 30 serving oom 0 && until_ok 30 serving oom 1; then
	W0=$(serving_pid oom 0) W1=$(serving_pid oom 1)
	own=$(cat /proc/$GPID/oom_score_adj) a0=$(cat /proc/$W0/oom_score_adj) a1=$(cat /proc/$W1/oom_score_adj)
	want=$((own + 500))
	[ $want -le 1000 ] || want=1000
	if [ "$a0" = $want ] && [ "$a1" = $want ]; then
		pass oom-score "goinit $own, workers $a0 and $a1"
	else
		fail oom-score "goinit $own, workers $a0 and $a1, want $want"
	fi
	check workers-answer answers 20 "worker 0 pid $W0" "worker 1 pid $W1"

	touch $D/oom-1
	if until_ok 30 logged /tmp/oom.log "worker 1 (pid $W1) "; then
		line=$(grep -F "worker 1 (pid $W1) " /tmp/oom.log)
		case "$line" in
		*"msg=\"worker 1 (pid $W1) killed by the OOM killer (memory limit 64MiB) after "*"; restarting in "*"ms (restart 1 of 10 in 5m0s)\""*)
			pass oom-kill-reported "$line" ;;
		*) fail oom-kill-reported "$line" ;;
		esac
	else
		show oom
		fail oom-kill-reported "no exit of worker 1 logged"
	fi
	kills=$(awk '$1 == "oom_kill" { print $2 }' $CG/ctr/goinit-$GPID/worker-1/memory.events)
	[ "$kills" = 1 ] || fail oom-kill-reported "worker-1 memory.events oom_kill $kills, want 1"
	if until_ok 30 serving oom 1 $W1 && W1b=$(serving_pid oom 1) && answers 20 "worker 0 pid $W0" "worker 1 pid $W1b"; then
		pass oom-restart "worker 1 restarted as pid $W1b; worker 0 still answers as pid $W0"
	else
		show oom
		fail oom-restart "worker 1 not back, or worker 0 (pid $W0) not answering"
	fi

	touch $D/child-oom-0
	want="worker 0: a process inside it was killed by the OOM killer (memory limit 64MiB); the worker itself is still running"
	if until_ok 30 logged /tmp/oom.out "worker 0 child ended: signal: killed" && until_ok 15 logged /tmp/oom.log "$want" &&
		answers 20 "worker 0 pid $W0" && ! logged /tmp/oom.log "worker 0 (pid"; then
		pass child-oom-reported "$(grep -F "$want" /tmp/oom.log)"
	else
		show oom
		fail child-oom-reported "want the child killed, \"$want\" logged and worker 0 (pid $W0) still answering"
	fi
else
	show oom
	fail workers-answer "the workers did not start serving"
fi
stop_workers oom cleanup-workers

# --- An OOM kill caused by the container's limit, not the worker's: the log
# must say so, or a user would raise --memory-limit in vain.
echo 96M >$CG/ctr/memory.max
run_in ctr ctroom --workers=1 --restart=never --memory-limit=512Mi -- /bin/limitworker alloc
echo max >$CG/ctr/memory.max
want="killed by the OOM killer (a memory limit above the worker's, such as the container's; the worker's is 512MiB)"
if [ "$RC" = 137 ] && logged /tmp/ctroom.log "$want"; then
	pass container-oom "$(grep -F "$want" /tmp/ctroom.log)"
else
	show ctroom
	fail container-oom "exit $RC; want 137 and \"$want\" logged"
fi
cleaned ctr "$st" cleanup-container-oom

# --- --memory-recycle: a worker whose working set passes the size is
# replaced gracefully, as a reload does, long before --memory-limit would
# OOM-kill it: a successor serves, then the old process ends by the stop
# signal; goinit stays up.
rm -f $D/*
start_in ctr recycle --workers=1 --listen=127.0.0.1:$PORT --memory-limit=128Mi --memory-recycle=32Mi -- /bin/limitworker serve $D
W=$CG/ctr/goinit-$GPID/worker-0
if until_ok 30 serving recycle 0; then
	R0=$(serving_pid recycle 0)
	memstat $W
	before=$MEMSTAT
	touch $D/grow-0
	want="worker 0 (pid $R0): recycling (its memory passed 32MiB (--memory-recycle))"
	# Its memory is read as soon as it has grown, most likely before the
	# next check (every 2 s) recycles it, for the verdict's detail.
	if until_ok 15 logged /tmp/recycle.out "worker 0 grew 48 MiB" && memstat $W && grown=$MEMSTAT &&
		until_ok 10 logged /tmp/recycle.log "$want"; then
		pass memory-recycle "$(grep -F "$want" /tmp/recycle.log); before growing: $before; grown: $grown"
	else
		memstat $W
		show recycle
		fail memory-recycle "no \"$want\" logged; before growing: $before; now: $MEMSTAT"
	fi
	if until_ok 20 serving recycle 0 $R0 && R1=$(serving_pid recycle 0) &&
		until_ok 20 logged /tmp/recycle.log "worker 0 (pid $R0, replaced by pid $R1) " && answers 20 "worker 0 pid $R1"; then
		line=$(grep -F "worker 0 (pid $R0, replaced by pid $R1) " /tmp/recycle.log)
		kills=$(awk '$1 == "oom_kill" { print $2 }' $W/memory.events)
		case "$line" in
		*"msg=\"worker 0 (pid $R0, replaced by pid $R1) killed by signal 15 (TERM) after "*)
			if [ "$kills" = 0 ] && ! gone $GPID; then
				pass memory-recycle-graceful "pid $R1 answers; $line; worker-0 memory.events oom_kill 0"
			else
				fail memory-recycle-graceful "$line; but worker-0 memory.events oom_kill $kills (want 0), goinit gone: $(gone $GPID && echo yes || echo no)"
			fi ;;
		*) fail memory-recycle-graceful "the old worker did not end by the stop signal: $line" ;;
		esac
	else
		show recycle
		fail memory-recycle-graceful "no successor of pid $R0 serving and answering, or its exit not logged"
	fi
else
	show recycle
	fail memory-recycle "the worker did not start serving"
fi
stop_workers recycle cleanup-recycle

# --- --memory-recycle counts the working set, not the page cache of what a
# worker merely reads. The VM has no disk, and a tmpfs file's pages are
# shmem charged to whoever wrote them, not file cache charged to its
# readers; so the worker reads a brd RAM disk (the module is shipped from the
# kernel's package). /dev/ram0 was never written, so brd itself holds no
# page; every block read lands in the block device's page cache, charged to
# the reader's cgroup as inactive file cache. The worker keeps the device
# open (fd 3): the kernel drops a block device's cache at its last close.
[ -e /dev/ram0 ] || ! [ -e /lib/modules/brd.ko ] || insmod /lib/modules/brd.ko rd_nr=1 rd_size=65536
if [ -b /dev/ram0 ]; then
	start_in ctr cache --workers=1 --ready=exec --memory-limit=256Mi --memory-recycle=24Mi -- \
		sh -c 'exec 3</dev/ram0; dd if=/dev/ram0 of=/dev/null bs=1M 2>/dev/null; echo read; exec sleep 1000'
	W=$CG/ctr/goinit-$GPID/worker-0
	cache_over() { memstat $W && [ $CUR -gt $((24 << 20)) ]; }
	if until_ok 20 logged /tmp/cache.out read && until_ok 10 cache_over; then
		over=$MEMSTAT
		if [ $WS -ge $((24 << 20)) ]; then
			fail page-cache "the working set itself is over 24MiB, not only the cache, so a recycle would be right and this proves nothing: $over"
		# At least three checks (every 2 s) see the cache; one recycle fails
		# it at once.
		elif until_ok 7 logged /tmp/cache.log recycling; then
			memstat $W
			fail page-cache "recycled for its page cache: $(grep -F recycling /tmp/cache.log); when the cache was charged: $over; now: $MEMSTAT"
		else
			memstat $W
			pass page-cache "not recycled over 7 s at --memory-recycle=24Mi with $MEMSTAT"
		fi
	else
		memstat $W
		show cache
		fail page-cache "the disk's cache was not charged to the worker's cgroup above 24MiB, so this proves nothing: $MEMSTAT"
	fi
	stop_workers cache cleanup-page-cache
else
	fail page-cache "no RAM disk /dev/ram0 (/lib/modules/brd.ko: $(ls -l /lib/modules/brd.ko 2>&1)); the VM has no other file system whose page cache a reader is charged for"
fi

# --- A fork bomb under --pids-limit=8: sh and 7 sleeps fit.
run_in ctr pids --pids-limit=8 -- sh -c "$FORK_BOMB"
if [ "$RC" = 2 ] && [ "$(tail -n 1 /tmp/pids.out)" = "started 7" ] && logged /tmp/pids.log "can't fork"; then
	pass pids-limit "stopped after $(tail -n 1 /tmp/pids.out): $(grep -F "can't fork" /tmp/pids.log)"
else
	show pids
	fail pids-limit "exit $RC, last line '$(tail -n 1 /tmp/pids.out)', want exit 2 after 'started 7' and \"can't fork\""
fi
cleaned ctr "$st" cleanup-pids

# --- Limits that cannot be applied.
# A read-only cgroupfs, as Docker mounts it by default; the remount stays in
# a private mount namespace.
ro() {
	timeout 30 unshare -m --propagation private sh -c \
		'echo $$ > /sys/fs/cgroup/ctr/cgroup.procs && mount -o remount,bind,ro /sys/fs/cgroup && exec /bin/goinit "$@"' \
		goinit "$@" >/tmp/$_name.out 2>/tmp/$_name.log
	RC=$?
}
_name=ro ro --memory-limit=64Mi -- echo ran
[ "$RC" = 2 ] && [ ! -s /tmp/ro.out ] || fail readonly "exit $RC, stdout '$(cat /tmp/ro.out)'; want 2 and nothing run"
one_line readonly ro "^goinit: cannot apply --memory-limit: cgroup memory controller is not writable at /sys/fs/cgroup/ctr/goinit-[0-9]+: read-only file system; mount the cgroup filesystem read-write \(.*\), drop --memory-limit, or set --cgroup=optional to run without limits$"
_name=ro-optional ro --memory-limit=64Mi --cgroup=optional -- echo ran
[ "$RC" = 0 ] && [ "$(cat /tmp/ro-optional.out)" = ran ] || fail readonly-optional "exit $RC, stdout '$(cat /tmp/ro-optional.out)'; want 0 and 'ran'"
one_line readonly-optional ro-optional 'level=WARN msg="running without per-worker limits \(--cgroup=optional\): cannot apply --memory-limit: cgroup memory controller is not writable at .*: read-only file system'
grep -q ' /sys/fs/cgroup cgroup2 rw' /proc/mounts || fail readonly "the remount escaped its namespace: $(grep /sys/fs/cgroup /proc/mounts)"
cleaned ctr "$st" cleanup-readonly

# Another process in goinit's cgroup: the no-internal-processes rule
# forbids enabling controllers for children (EBUSY).
mkdir $CG/busy
sh -c 'echo $$ > /sys/fs/cgroup/busy/cgroup.procs && exec sleep 600' &
SP=$!
until_ok 10 grep -qx $SP $CG/busy/cgroup.procs
run_in busy busy --memory-limit=64Mi -- echo ran
[ "$RC" = 2 ] && [ ! -s /tmp/busy.out ] || fail busy "exit $RC, stdout '$(cat /tmp/busy.out)'; want 2 and nothing run"
one_line busy busy "^goinit: cannot apply --memory-limit: cannot enable the cgroup memory controller in /sys/fs/cgroup/busy: other processes share goinit's cgroup \(pids $SP\); run goinit as the container's first process, alone in its cgroup, drop --memory-limit, or set --cgroup=optional to run without limits$"
kill $SP
wait $SP
cleaned busy "" cleanup-busy

# A controller the parent does not delegate.
mkdir $CG/p
echo +memory >$CG/p/cgroup.subtree_control
mkdir $CG/p/c
run_in p/c nodeleg --pids-limit=8 -- echo ran
[ "$RC" = 2 ] && [ ! -s /tmp/nodeleg.out ] || fail not-delegated "exit $RC, stdout '$(cat /tmp/nodeleg.out)'; want 2 and nothing run"
one_line not-delegated nodeleg "^goinit: cannot apply --pids-limit: cgroup pids controller is not delegated to /sys/fs/cgroup/p/c \(available: memory\); enable it in the parent's cgroup.subtree_control \(systemd: Delegate=yes\), drop --pids-limit, or set --cgroup=optional to run without limits$"
cleaned p/c "" cleanup-not-delegated
