#!/usr/bin/env bash
# compare_postfix.sh - end-to-end messages/s of oxipost beside real Postfix (issue 6).
#
# Two loads, each run against oxipost and against Debian's Postfix in the same run, on the
# same disk, with the same main.cf settings and each MTA at its defaults otherwise:
#   relay    smtp-source -> MTA -> smtp(8) to relayhost [127.0.0.1]:port = smtp-sink
#   maildir  smtp-source -> MTA -> virtual(8) -> a Maildir for each of $USERS users
# Each MTA gets a fresh queue, is started before the clock starts and stopped after it
# stops; the clock runs from the first message sent until the last is delivered (the
# sink's DATA count reached, or every Maildir file in new/). Both sides fsync as they
# always do: nothing is acknowledged before it is on stable storage.
#
# Usage: bench/compare_postfix.sh   (as root: Postfix's queue is root-owned)
# Knobs (environment): MESSAGES=5000 SESSIONS=20 SIZE=1024 USERS=100 ROUNDS=3
#   LOADS="relay maildir" (either or both).
#   Rounds alternate which MTA goes first; the median of each is reported (the machine
#   may be shared: one round alone is noisy).
#   KEEP=1 keeps the work directory (configs, logs, queues) for inspection.
#   SIDES="postfix oxipost" (either or both: one side alone prints no ratio).
#   CPU=1 also prints, after each measurement, the CPU time per message of each of the
#   MTA's processes (user and system, from /proc, grouped by service) during the run.
# Output: a line per measurement, then last, exactly:
#   relay ratio: X
#   maildir ratio: Y
# (oxipost msg/s / Postfix msg/s).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MESSAGES=${MESSAGES:-5000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-1024}
USERS=${USERS:-100}
ROUNDS=${ROUNDS:-3}
LOADS=${LOADS:-relay maildir}
SIDES=${SIDES:-postfix oxipost}
CPU=${CPU:-0}
# A run that stops making progress for this long is reported as failed, not waited out.
STALL=${STALL:-60}
POSTFIX=/usr/sbin/postfix
SOURCE=/usr/sbin/smtp-source
SINK=/usr/sbin/smtp-sink

bash scripts/install-debian-deps.sh
# Figures are for the interpreter oxipost is deployed on (the Makefile's SYSTEM_PYTHON).
if [ -e .venv ] && ! grep -qx 'home = /usr/bin' .venv/pyvenv.cfg; then
  echo "compare_postfix: .venv is not on Debian's /usr/bin/python3.11: remove it first" >&2
  exit 1
fi
[ -x .venv/bin/python ] || make develop
PY=$ROOT/.venv/bin/python
OXIPOST=$ROOT/.venv/bin/oxipost
"$PY" -c 'import oxipost._core' || make develop

if [ "$(id -u)" -ne 0 ]; then
  echo "compare_postfix: run as root (Postfix's queue and virtual(8) need it)" >&2
  exit 1
fi
if (( MESSAGES % USERS != 0 )); then
  echo "compare_postfix: MESSAGES must be a multiple of USERS" >&2
  exit 1
fi

# Not /tmp: on some machines that is a tmpfs, where fsync costs nothing.
WORK=$(mktemp -d /var/tmp/oxipost-e2e.XXXXXX)
# Postfix's unprivileged daemons and the virtual(8) uid must reach into it.
chmod 755 "$WORK"
VUID=$(id -u nobody)
VGID=$(id -g nobody)

pids=()
postfix_dirs=()
cleanup() {
  local d p
  for d in "${postfix_dirs[@]}"; do
    "$POSTFIX" -c "$d" stop >/dev/null 2>&1 || true
  done
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 i
  for ((i = 0; i < 300; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "compare_postfix: nothing listens on 127.0.0.1:$port" >&2
  return 1
}

# wait_greeting PORT: the MTA has started when it answers a connection with its 220 greeting.
# A listening socket is not enough: master listens before its smtpd is ready to answer (and
# Postfix's forks its first smtpd on the first connection), and a run timed from there would
# count how long the MTA takes to start, on both sides, as if it were delivery.
wait_greeting() {
  "$PY" - "$1" <<'EOF'
import socket, sys, time

deadline = time.time() + 30
while time.time() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
            if s.makefile("rb").readline().startswith(b"220 "):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit("compare_postfix: no 220 greeting on 127.0.0.1:" + sys.argv[1])
EOF
}

# Waits until `target` deliveries are counted, printing "seconds delivered" (seconds since
# the epoch time given as start). kind "sink": the last mesg=N in smtp-sink's -c output.
# kind "maildir": files in <base>/*/new/; counting them costs milliseconds, so the MTA's
# log (its "delivered to maildir" lines, written after each file is in new/) says when to
# count, with a count every half second in case log lines are late.
WAITER='
import os, re, sys, time
kind, path, target, start, stall = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
log = sys.argv[6] if len(sys.argv) > 6 else ""
mesg = re.compile(rb"mesg=(\d+)")
pos = logged = 0

def sink():
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 64))
        found = mesg.findall(f.read())
    return int(found[-1]) if found else 0

def files():
    n = 0
    try:
        users = list(os.scandir(path))
    except FileNotFoundError:  # no delivery yet
        return 0
    for user in users:
        try:
            n += sum(1 for _ in os.scandir(os.path.join(user.path, "new")))
        except FileNotFoundError:
            pass
    return n

def log_lines():
    global pos, logged
    try:
        with open(log, "rb") as f:
            f.seek(pos)
            data = f.read()
    except FileNotFoundError:
        return logged
    whole = data[: data.rfind(b"\n") + 1]
    pos += len(whole)
    logged += whole.count(b"status=sent (delivered to maildir)")
    return logged

n, last, moved, counted = 0, -1, time.time(), 0.0
while True:
    now = time.time()
    if kind == "sink":
        n = progress = sink()
    else:
        hint = log_lines()
        if hint >= target or now - counted >= 0.5:
            n, counted = files(), now
        progress = max(hint, n)
    if n >= target or now - moved > stall:
        break
    if progress != last:
        last, moved = progress, now
    time.sleep(0.02)
print(f"{now - start:.3f} {n}")
'

# CPU=1: `snapshot ROOT_PID OUT` records the user and system ticks of ROOT_PID's process tree;
# `snapshot ROOT_PID OUT BEFORE MESSAGES` prints, for each service, its CPU per message since
# BEFORE (a process started after BEFORE counts from zero). Services are named by oxipost's
# --service argument, or Postfix's process name; "master" includes the daemons it reaped.
CPUSNAP='
import json, os, sys
root, out = int(sys.argv[1]), sys.argv[2]
tick = os.sysconf("SC_CLK_TCK")
procs = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    fields = stat[stat.rindex(")") + 2 :].split()
    # utime + cutime, stime + cstime: a Postfix daemon that exits at max_use is counted in
    # its parent, the master, once reaped.
    procs[int(pid)] = (int(fields[1]), stat[stat.index("(") + 1 : stat.rindex(")")], argv, int(fields[11]) + int(fields[13]), int(fields[12]) + int(fields[14]))
def under(pid):
    while pid in procs and pid != root:
        pid = procs[pid][0]
    return pid == root
now = {}
for pid, (ppid, comm, argv, utime, stime) in procs.items():
    if not under(pid):
        continue
    name = argv[argv.index(b"--service") + 1].decode() if b"--service" in argv else comm
    now[str(pid)] = (name, utime, stime)
if len(sys.argv) == 3:
    json.dump(now, open(out, "w"))
    sys.exit()
before, messages = json.load(open(sys.argv[3])), int(sys.argv[4])
per = {}
for pid, (name, utime, stime) in now.items():
    _, u0, s0 = before.get(pid, (name, 0, 0))
    u, s = per.get(name, (0, 0))
    per[name] = (u + utime - u0, s + stime - s0)
us = 1e6 / tick / messages
total = 0
for name, (u, s) in sorted(per.items(), key=lambda kv: -sum(kv[1])):
    if u + s:
        print(f"    {name:<24} user {u * us:6.0f}  sys {s * us:6.0f}  us/msg")
        total += u + s
print("    all".ljust(28) + f" {total * us:18.0f}  us/msg")
'

# Common main.cf lines: the same on both sides.
common_main() {
  local d=$1 port=$2
  cat <<EOF
compatibility_level = 3.6
myhostname = bench.example.test
mydomain = example.test
myorigin = \$myhostname
mydestination = localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
relayhost = [127.0.0.1]:$port
virtual_mailbox_domains = vbench.example.test
virtual_mailbox_base = $d/vmail
virtual_mailbox_maps = texthash:$d/vmailbox
virtual_uid_maps = static:$VUID
virtual_gid_maps = static:$VGID
EOF
}

# setup_postfix DIR SMTPD_PORT RELAY_PORT: a Postfix instance of its own, upstream's
# master.cf services (Debian's, without chroot: the queue is a temp directory).
setup_postfix() {
  local d=$1 port=$2 relay=$3
  mkdir -p "$d/spool" "$d/data" "$d/vmail"
  {
    echo "queue_directory = $d/spool"
    echo "data_directory = $d/data"
    echo "alternate_config_directories = $d"
    echo "maillog_file = $d/maillog"
    common_main "$d" "$relay"
  } >"$d/main.cf"
  awk -v port="$port" '
    /^postlog[ \t]/ { last = 1 }
    /^[a-z]/ && NF >= 8 { $5 = "n" }
    /^smtp[ \t]+inet[ \t]/ { $1 = "127.0.0.1:" port }
    { print }
    last && /^postlog/ { exit }
  ' /etc/postfix/master.cf >"$d/master.cf"
  MAIL_CONFIG=$d "$POSTFIX" -c "$d" set-permissions >/dev/null 2>&1 || true
  MAIL_CONFIG=$d "$POSTFIX" -c "$d" start >"$d/start.log" 2>&1
  postfix_dirs+=("$d")
}

stop_postfix() {
  local d=$1
  MAIL_CONFIG=$d "$POSTFIX" -c "$d" stop >/dev/null 2>&1 || true
}

# setup_oxipost DIR SMTPD_PORT RELAY_PORT: the embedded default's master.cf on another port.
oxipost_pid=
setup_oxipost() {
  local d=$1 port=$2 relay=$3
  mkdir -p "$d/vmail"
  {
    echo "queue_directory = $d/spool"
    echo "data_directory = $d/lib"
    echo "maillog_file = $d/maillog"
    echo "disable_dns_lookups = yes"
    common_main "$d" "$relay"
  } >"$d/main.cf"
  # The embedded default's master.cf as it is, as Postfix runs its own: smtpd and qmgr as
  # mail_owner, local(8) and virtual(8) privileged (catalogue 50), so each Maildir
  # delivery crosses from qmgr to the virtual(8) process as it does in Postfix.
  awk -v port="$port" '
    /^127\.0\.0\.1:2525[ \t]/ { $1 = "127.0.0.1:" port }
    { print }
  ' "$ROOT/conf/master.cf" >"$d/master.cf"
  "$OXIPOST" -c "$d" start-fg >"$d/start.log" 2>&1 &
  oxipost_pid=$!
  pids+=("$oxipost_pid")
}

stop_oxipost() {
  kill "$oxipost_pid" 2>/dev/null || true
  wait "$oxipost_pid" 2>/dev/null || true
}

# The load, as the seed's scripts: $SESSIONS sessions, one message per session, $SIZE bytes.
send_relay() {
  local port=$1
  "$SOURCE" -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@example.org \
    -t rcpt@relay.example.net "127.0.0.1:$port"
}

# smtp-source has one recipient address per run: $SESSIONS lanes in parallel, each sending
# its users' share in turn, keep $SESSIONS sessions open with every user receiving mail.
send_maildir() {
  local port=$1 lane u per=$((MESSAGES / USERS))
  for ((lane = 0; lane < SESSIONS; lane++)); do
    (
      for ((u = lane; u < USERS; u += SESSIONS)); do
        "$SOURCE" -s 1 -m "$per" -l "$SIZE" -f bench@example.org \
          -t "user$u@vbench.example.test" "127.0.0.1:$port"
      done
    ) &
  done
  wait
}

# measure SIDE LOAD: one fresh instance of SIDE, one load; prints "SIDE LOAD rate".
measure() {
  local side=$1 load=$2 d port relay sink_out sink_pid sender start out secs n u root
  d=$(mktemp -d "$WORK/$side-$load.XXXX")
  chmod 755 "$d"
  port=$(free_port)
  relay=$(free_port)
  for ((u = 0; u < USERS; u++)); do
    echo "user$u@vbench.example.test vbench.example.test/user$u/"
  done >"$d/vmailbox"
  sink_out=$d/sink.out
  "$SINK" -c -u postfix "127.0.0.1:$relay" 1024 >"$sink_out" 2>&1 &
  sink_pid=$!
  pids+=("$sink_pid")
  if [ "$side" = postfix ]; then
    setup_postfix "$d" "$port" "$relay"
  else
    setup_oxipost "$d" "$port" "$relay"
  fi
  # virtual(8) creates the users' Maildirs as the virtual uid.
  chown "$VUID:$VGID" "$d/vmail"
  wait_port "$relay"
  wait_greeting "$port"
  # What the previous run left dirty is written back now, not during this run's fsyncs.
  sync
  if [ "$CPU" = 1 ]; then
    if [ "$side" = postfix ]; then root=$(<"$d/spool/pid/master.pid"); else root=$oxipost_pid; fi
    "$PY" -c "$CPUSNAP" "${root// /}" "$d/cpu.before"
  fi
  # The sender in a process group of its own, so that a stalled run can stop all of it.
  set -m
  start=$EPOCHREALTIME
  if [ "$load" = relay ]; then
    send_relay "$port" >"$d/source.log" 2>&1 &
  else
    send_maildir "$port" >"$d/source.log" 2>&1 &
  fi
  sender=$!
  set +m
  if [ "$load" = relay ]; then
    out=$("$PY" -c "$WAITER" sink "$sink_out" "$MESSAGES" "$start" "$STALL")
  else
    out=$("$PY" -c "$WAITER" maildir "$d/vmail/vbench.example.test" "$MESSAGES" "$start" \
      "$STALL" "$d/maillog")
  fi
  read -r secs n <<<"$out"
  if ((n < MESSAGES)); then
    kill -- "-$sender" 2>/dev/null || true
  fi
  wait "$sender" || true
  if [ "$CPU" = 1 ]; then
    "$PY" -c "$CPUSNAP" "${root// /}" "$d/cpu.after" "$d/cpu.before" "$n" >"$d/cpu.txt"
  fi
  if [ "$side" = postfix ]; then stop_postfix "$d"; else stop_oxipost; fi
  kill "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" 2>/dev/null || true
  if ((n < MESSAGES)); then
    echo "$side $load: only $n of $MESSAGES delivered (stalled for ${STALL}s); see $d" >&2
    KEEP=1
    echo "$side $load 0"
    return
  fi
  printf '%-8s %-8s %6d msgs %8.2f s %9.1f msg/s\n' "$side" "$load" "$n" "$secs" \
    "$("$PY" -c "print($n / $secs)")" >&2
  [ "$CPU" != 1 ] || cat "$d/cpu.txt" >&2
  echo "$side $load $("$PY" -c "print(f'{$n / $secs:.1f}')")"
}

echo "compare_postfix: $MESSAGES messages, $SESSIONS sessions, $SIZE bytes, $USERS Maildir" \
  "users, $ROUNDS round(s), $(nproc) CPUs, load $(cut -d" " -f1-3 /proc/loadavg)," \
  "Postfix $(postconf -dh mail_version)" >&2
results=$WORK/results
: >"$results"
for ((r = 0; r < ROUNDS; r++)); do
  for load in $LOADS; do
    order=($SIDES)
    if ((r % 2 == 1)); then order=("${order[@]:1}" "${order[0]}"); fi
    for side in "${order[@]}"; do
      measure "$side" "$load" >>"$results"
    done
  done
done

if [ "${KEEP:-0}" = 1 ]; then
  echo "work directory kept: $WORK" >&2
fi
# Median msg/s of each side and load, then the ratios, last.
"$PY" - "$results" <<'EOF'
import statistics, sys
rates = {}
for line in open(sys.argv[1]):
    side, load, rate = line.split()
    rates.setdefault((side, load), []).append(float(rate))
med = {k: statistics.median(v) for k, v in rates.items()}
for (side, load), rate in sorted(med.items(), key=lambda kv: kv[0][::-1]):
    print(f"{load}: {side} {rate:.1f} msg/s (median of {len(rates[(side, load)])})")
loads = [l for l in ("relay", "maildir") if ("oxipost", l) in med and ("postfix", l) in med]
for load in loads:
    o, p = med[("oxipost", load)], med[("postfix", load)]
    print(f"{load} ratio: {o / p:.2f}" if p else f"{load} ratio: n/a")
EOF
