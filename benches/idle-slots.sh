#!/bin/sh
# Where the wall time of `tom-ledger run -j 2` goes between workers: runs a plan of
# `true` workers under strace and reports, for every worker that exits, how long its slot
# stays idle until the next worker is exec'd, and which ledger work the supervisor does
# inside those gaps (operation file replaced, read, log lines appended).
#
# strace slows every system call down, so the absolute times are larger than in a plain
# run; the shares (what sits between an exit and the next start) are what to read.
#
# Usage: benches/idle-slots.sh [TOM_LEDGER_BINARY] [WORKERS]
#   default binary: target/release/tom-ledger (cargo build --release), 300 workers.
set -eu

BIN=${1:-target/release/tom-ledger}
N=${2:-300}
command -v strace >/dev/null || { echo "idle-slots: strace is not installed" >&2; exit 2; }
[ -x "$BIN" ] || { echo "idle-slots: no executable at $BIN (cargo build --release)" >&2; exit 2; }

DIR=$(mktemp -d "${TMPDIR:-/tmp}/idle-slots.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
i=0
while [ "$i" -lt "$N" ]; do
    printf '[[worker]]\nname = "w%d"\ncmd = ["true"]\n\n' "$i"
    i=$((i + 1))
done >"$DIR/plan.toml"

strace -f -q -ttt -y -o "$DIR/trace" \
    -e trace=execve,renameat2,openat,write,exit_group,vfork,clone,clone3 \
    "$BIN" --ledger "$DIR/ledger" --json run -j 2 --plan "$DIR/plan.toml" >/dev/null

awk '
# Lines: PID TIME syscall(args) = ret   |   PID TIME +++ exited with N +++
{
    pid = $1; t = $2 + 0
    if (NR == 1) main = pid
}
/ execve\(/ {
    if ($0 ~ /execve\("[^"]*\/true"/ && $0 !~ /= -1/) {
        worker[pid] = 1; starts[++nstarts] = t
        if (pending > 0) {
            # The oldest idle slot is filled now.
            gap = t - idle[1]; gaps += gap; ngaps++
            for (k = 1; k < pending; k++) idle[k] = idle[k + 1]
            pending--
            if (pending == 0) busy_until = t
        }
    }
    next
}
/\+\+\+ exited with/ {
    if (pid in worker) { idle[++pending] = t; nexits++ }
    next
}
pending > 0 && !(pid in worker) {
    # Supervisor work while a slot is idle: on its main thread (which starts and reaps
    # the workers) or on another of its threads (beside it).
    where = (pid == main) ? "main" : "other"
    if ($0 ~ /renameat2\(/ && $0 ~ /operation\.json/) commits[where]++
    else if ($0 ~ /openat\(/ && $0 ~ /operation\.json"/ && $0 !~ /O_WRONLY|O_RDWR/) reads[where]++
    else if ($0 ~ /write\([0-9]+<[^>]*operation\.log>/) logs[where]++
}
END {
    if (nstarts == 0) { print "idle-slots: no worker was seen starting"; exit 1 }
    wall = starts[nstarts] - starts[1]
    printf "workers started %d, exited %d; first to last start %.3f s\n", nstarts, nexits, wall
    if (ngaps > 0)
        printf "idle slot after an exit: %d gaps, mean %.0f us, %.0f%% of 2 slots x the wall time\n",
            ngaps, gaps / ngaps * 1e6, gaps / (2 * wall) * 100
    for (w = 1; w <= 2; w++) {
        where = (w == 1) ? "main" : "other"
        printf "while a slot was idle, on the supervisor'"'"'s %s thread%s: %d ledger writes (operation file replaced), %d operation file reads, %d log lines\n",
            where, (w == 1) ? "" : "s", commits[where], reads[where], logs[where]
    }
}' "$DIR/trace"
