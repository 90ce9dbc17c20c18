#!/bin/bash
# harness.sh: boot the host's systemd as PID 1 of fresh namespaces (pid, mount, uts, ipc,
# net, cgroup) over a tmpfs overlay of /, for the end-to-end test of libwatch's units.
# Built from ../../../shared/recipes/systemd-e2e.sh (verified on systemd 252); see README.md.
#
# Protocol: run as root; once systemd is up it prints one line on stdout
#     READY <host pid of the container's PID 1> <share dir>
# then waits until its stdin closes (or SIGTERM/SIGINT) and removes everything:
# the container, its cgroup and its work dir. <share dir> is bind-mounted inside as
# /libwatch-e2e. Run a command inside with
#     nsenter --target PID --mount --pid --uts --ipc --net -- CMD
# Nothing is installed on the host; no host mount, cgroup, hostname, network, sysctl
# or unit file is changed. Env: BOOT_TIMEOUT (s, default 60), KEEP_LOGS=1 (keep the
# work dir with console.log and journal.txt), PROJECT_DIR (bind it read-only at the same
# path inside; only needed when the checkout is not on the root file system).
set -euo pipefail

BOOT_TIMEOUT=${BOOT_TIMEOUT:-60}
PROJECT_DIR=${PROJECT_DIR:-}
say() { echo "harness: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
for b in unshare nsenter setpriv script pivot_root findmnt; do command -v $b >/dev/null || die "missing $b"; done
[ -x /lib/systemd/systemd ] || die "missing /lib/systemd/systemd"
CG2=$(findmnt -n -t cgroup2 -o TARGET | head -n1)
[ -n "$CG2" ] || die "no cgroup2 mount on the host"

WORK=$(mktemp -d /tmp/libwatch-e2e.XXXXXX)
chmod 755 "$WORK"
SHARE=$WORK/share
CG=$CG2/$(basename "$WORK")   # the container's cgroup root
mkdir -p "$SHARE" "$WORK/ns"
SCRIPT_PID=""; NS_PID=""

ct() { nsenter --target "$NS_PID" --mount --pid --uts --ipc --net -- "$@"; }

cleanup() {
  set +e
  if [ -n "$NS_PID" ] && kill -0 "$NS_PID" 2>/dev/null; then
    [ "${KEEP_LOGS:-0}" = 1 ] && ct journalctl -b --no-pager > "$WORK/journal.txt" 2>&1
    timeout 15 nsenter -t "$NS_PID" -m -p -- systemctl poweroff --no-block >/dev/null 2>&1
    for _ in $(seq 1 100); do kill -0 "$NS_PID" 2>/dev/null || break; sleep 0.1; done
    # SIGKILL to the namespace's PID 1 kills every process in the namespace
    kill -0 "$NS_PID" 2>/dev/null && kill -KILL "$NS_PID"
  fi
  if [ -n "$SCRIPT_PID" ]; then
    for _ in $(seq 1 50); do kill -0 "$SCRIPT_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$SCRIPT_PID" 2>/dev/null && kill -TERM "$SCRIPT_PID"
    wait "$SCRIPT_PID" 2>/dev/null
  fi
  [ -d "$CG" ] && find "$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
  [ -d "$CG" ] && say "WARNING: could not remove $CG"
  if [ "${KEEP_LOGS:-0}" = 1 ]; then say "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------- container init
cat > "$WORK/inner.sh" <<'INNER'
#!/bin/bash
set -euo pipefail
WORK=$1; SHARE=$2; PROJECT_DIR=$3
# wait until the host has moved script(1)/unshare(1) out of our cgroup
for _ in $(seq 1 200); do [ -e "$WORK/go" ] && break; sleep 0.05; done
CONSOLE=$(tty)
mount -t tmpfs -o mode=755 tmpfs "$WORK/ns"
mkdir -p "$WORK/ns"/{upper,work,root}
M=$WORK/ns/root
mount -t overlay overlay -o "lowerdir=/,upperdir=$WORK/ns/upper,workdir=$WORK/ns/work" "$M"
mount -t proc proc "$M/proc"
# kernel tunables stay read-only, so systemd-sysctl & co. are skipped
mount --bind "$M/proc/sys" "$M/proc/sys"; mount -o remount,bind,ro "$M/proc/sys"
if [ -e "$M/proc/sysrq-trigger" ]; then
  mount --bind "$M/proc/sysrq-trigger" "$M/proc/sysrq-trigger"; mount -o remount,bind,ro "$M/proc/sysrq-trigger"
fi
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$M/sys"
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$M/sys/fs/cgroup"
mount -t tmpfs -o mode=755,nosuid tmpfs "$M/dev"
for n in null zero full random urandom tty; do touch "$M/dev/$n"; mount --bind "/dev/$n" "$M/dev/$n"; done
mkdir "$M/dev/pts" "$M/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$M/dev/shm"
touch "$M/dev/console"; mount --bind "$CONSOLE" "$M/dev/console"
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$M/run"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$M/tmp"
mkdir -p "$M/libwatch-e2e"; mount --bind "$SHARE" "$M/libwatch-e2e"
if [ -n "$PROJECT_DIR" ]; then
  mkdir -p "$M$PROJECT_DIR"; mount --bind "$PROJECT_DIR" "$M$PROJECT_DIR"
  mount -o remount,bind,ro "$M$PROJECT_DIR"
fi
# Mask the host's periodic jobs and enabled sockets (in the overlay only)
for d in "$M"/etc/systemd/system/timers.target.wants "$M"/lib/systemd/system/timers.target.wants \
         "$M"/etc/systemd/system/sockets.target.wants; do
  [ -d "$d" ] || continue
  for u in "$d"/*; do [ -e "$u" ] || [ -L "$u" ] || continue
    case "$(basename "$u")" in libwatch-*) continue;; esac
    ln -sfn /dev/null "$M/etc/systemd/system/$(basename "$u")"
  done
done
# No libwatch unit, settings or state of the host leaks in: the test installs its own
# (in the overlay only; a libwatch installed on the host is left as it is).
rm -rf "$M"/etc/systemd/system/libwatch-* "$M"/etc/libwatch "$M"/var/lib/libwatch "$M"/var/cache/libwatch
cd "$M"; mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot; rmdir /.oldroot
export container=libwatch-e2e
exec setpriv --bounding-set -sys_module,-sys_time,-sys_boot,-sys_rawio,-wake_alarm,-syslog,-mac_admin,-mac_override \
  /lib/systemd/systemd --system --unit=basic.target
INNER
chmod +x "$WORK/inner.sh"

(
  mkdir "$CG"; echo "$BASHPID" > "$CG/cgroup.procs"
  exec setpriv --pdeathsig SIGKILL script -qfec "exec unshare --pid --fork --kill-child=SIGKILL --mount --propagation private \
      --uts --ipc --net --cgroup '$WORK/inner.sh' '$WORK' '$SHARE' '$PROJECT_DIR'" \
      "$WORK/console.log" </dev/null >/dev/null 2>&1
) &
SCRIPT_PID=$!

ORIG_CG=$(sed -n 's/^0:://p' /proc/self/cgroup)
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while :; do
  [ "$(date +%s)" -lt "$deadline" ] || { cat "$WORK/console.log" >&2; die "systemd did not start"; }
  kill -0 "$SCRIPT_PID" 2>/dev/null || { cat "$WORK/console.log" >&2; die "container exited early"; }
  if [ -z "$NS_PID" ]; then
    for p in $(cat /proc/"$SCRIPT_PID"/task/*/children 2>/dev/null); do
      for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do
        [ "$(cat /proc/$p/comm 2>/dev/null)" = unshare ] && NS_PID=$c && UNSHARE_PID=$p
      done
    done
    if [ -n "$NS_PID" ]; then
      echo "$UNSHARE_PID" > "$CG2$ORIG_CG/cgroup.procs"
      echo "$SCRIPT_PID" > "$CG2$ORIG_CG/cgroup.procs"
      touch "$WORK/go"
    fi
  fi
  if [ -n "$NS_PID" ] && [ "$(cat /proc/$NS_PID/comm 2>/dev/null)" = systemd ] \
     && ct test -S /run/systemd/private 2>/dev/null; then break; fi
  sleep 0.1
done
state=$(ct timeout "$BOOT_TIMEOUT" systemctl is-system-running --wait 2>&1 || true)
case "$state" in
  running|degraded) say "systemd up (pid $NS_PID on the host), state: $state" ;;
  *) ct systemctl --failed --no-pager >&2 || true; die "boot failed: $state" ;;
esac

echo "READY $NS_PID $SHARE"
# Hold the container until the caller closes our stdin (or dies, which closes it too).
while read -r _; do :; done
