#!/usr/bin/env bash
# The Debian package's tests (run by `make test` after the Swift suite; as root on Debian 12):
#   1. contents: files, owners, modes, control fields, Depends from dpkg-shlibdeps, lintian without errors,
#      the unit checked by systemd-analyze (verify, security) and its capability names checked;
#   2. a clean Debian 12 root made by debootstrap: only the package's Depends installed, then the package;
#      its binaries run there; upgrade keeps state and edited config; remove and purge leave nothing behind;
#   3. this machine: install, pgchorusd started as the unit starts it (user, group, umask, ambient
#      capabilities, runtime directory, NOTIFY_SOCKET) in front of a real PostgreSQL, psql through it on a
#      privileged port, `pgchorus status`; the VIP claimed as the pgchorus user inside a network namespace;
#      purge.
# Usage: Packaging/test-deb.sh [path/to/pgchorus_*.deb]   (default: build it with Packaging/build-deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C.UTF-8

[ "$(id -u)" = 0 ] || { echo "test-deb: run as root (dpkg, debootstrap, chroot, network namespaces)" >&2; exit 2; }

DEB=${1:-}
if [ -z "$DEB" ]; then
    bash Packaging/build-deb.sh
    DEB=$(ls -t .build/deb/pgchorus_*.deb | head -1)
fi
DEB=$(readlink -f "$DEB")

WORK=$(mktemp -d /tmp/pgchorus-deb-test.XXXXXX)
chmod 0755 "$WORK"
ROOT="$WORK/root"
NETNS="pgcdeb$$"
PIDS=()
FAILURES=0

cleanup() {
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    mountpoint -q "$ROOT/proc" && umount -l "$ROOT/proc"
    ip netns del "$NETNS" 2>/dev/null
    if [ -n "${PGDATA_DIR:-}" ] && [ -d "$PGDATA_DIR" ]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1
    fi
    if dpkg -s pgchorus >/dev/null 2>&1; then dpkg -P pgchorus >/dev/null 2>&1; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# stop_and_wait PID: SIGTERM, then wait at most 20 s; sets STOP_STATUS to the exit status
# (124: it did not stop and was killed).
# Decided once, in the loop: bash reaps an exited child on its own (SIGCHLD), so a second look after
# the loop can find a zombie gone and must not turn that into a failed kill.
stop_and_wait() {
    kill -TERM "$1" 2>/dev/null || true
    local stopped=no
    for _ in $(seq 200); do
        if ! kill -0 "$1" 2>/dev/null || [ "$(ps -o stat= -p "$1" | cut -c1)" = Z ]; then stopped=yes; break; fi
        sleep 0.1
    done
    STOP_STATUS=0
    if [ "$stopped" = no ]; then
        kill -KILL "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; STOP_STATUS=124; return
    fi
    wait "$1" || STOP_STATUS=$?
}
ok() { echo "  ok: $*"; }
fail() { echo "  FAIL: $*" >&2; FAILURES=$((FAILURES + 1)); }
check() { # check DESCRIPTION COMMAND... (the command's output is shown only when it fails)
    local what=$1; shift
    if "$@" >"$WORK/check.out" 2>&1; then ok "$what"; else fail "$what"; sed 's/^/    /' "$WORK/check.out" | tail -40 >&2; fi
}
# mode/owner of a path in a root: check_stat ROOT PATH MODE OWNER:GROUP
check_stat() {
    local got
    got=$(chroot "$1" stat -c '%a %U:%G' "$2" 2>/dev/null || echo "missing")
    if [ "$got" = "$3 $4" ]; then ok "$2 is $3 $4"; else fail "$2 is '$got', expected '$3 $4'"; fi
}

echo "== 1. contents of $(basename "$DEB")"
dpkg-deb -x "$DEB" "$WORK/contents"
dpkg-deb -e "$DEB" "$WORK/control"
for path in usr/sbin/pgchorusd usr/bin/pgchorus etc/pgchorus/pgchorus.toml etc/pgchorus/users.txt \
    lib/systemd/system/pgchorusd.service usr/share/doc/pgchorus/copyright usr/share/doc/pgchorus/changelog.Debian.gz \
    usr/share/doc/pgchorus/README.md usr/share/doc/pgchorus/operations.md usr/share/man/man1/pgchorus.1.gz \
    usr/share/man/man8/pgchorusd.8.gz usr/share/bash-completion/completions/pgchorus; do
    check "ships /$path" test -s "$WORK/contents/$path"
done
check "conffiles are the configuration and the users file" \
    diff <(printf '/etc/pgchorus/pgchorus.toml\n/etc/pgchorus/users.txt\n') "$WORK/control/conffiles"
DEPENDS=$(dpkg-deb -f "$DEB" Depends)
echo "  Depends: $DEPENDS"
for lib in libc6 libpq5 libmnl0 libpcap0.8 libsqlite3-0 adduser; do
    check "Depends names $lib" grep -q "\\b$lib\\b" <<<"$DEPENDS"
done
# The Swift runtime is linked in: no libswift*.so among the binaries' needs.
check "binaries need no Swift shared library" \
    bash -c "! objdump -p '$WORK/contents/usr/sbin/pgchorusd' '$WORK/contents/usr/bin/pgchorus' | grep -q 'NEEDED.*libswift\\|NEEDED.*libFoundation'"
check "binaries are linked with full RELRO (BIND_NOW)" \
    bash -c "readelf -d '$WORK/contents/usr/sbin/pgchorusd' | grep -q 'FLAGS.*BIND_NOW' && readelf -lW '$WORK/contents/usr/sbin/pgchorusd' | grep -q GNU_RELRO"
check "man pgchorus renders" bash -c "MANWIDTH=80 man -l '$WORK/contents/usr/share/man/man1/pgchorus.1.gz' 2>/dev/null | grep -q 'pgchorus status'"
check "bash completion loads and completes subcommands" bash -c "
    source '$WORK/contents/usr/share/bash-completion/completions/pgchorus' 2>/dev/null
    declare -F | grep -q _pgchorus"

echo "-- lintian"
lintian --pedantic --display-info --tag-display-limit 0 "$DEB" >"$WORK/lintian.txt" 2>&1 || true
grep -v 'running with root privileges' "$WORK/lintian.txt" | grep -v '^N:' | grep -v 'spelling-error-in-binary' | sed 's/^/  | /' || true
echo "  ($(grep -c 'spelling-error-in-binary' "$WORK/lintian.txt" || true) spelling-error-in-binary infos, from the statically linked libraries, not shown)"
check "lintian reports no error" bash -c "! grep -q '^E:' '$WORK/lintian.txt'"

echo "-- the systemd unit"
UNIT="$WORK/contents/lib/systemd/system/pgchorusd.service"
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -1; }
mkdir -p "$WORK/unit"
sed "s|^ExecStart=/usr/sbin/pgchorusd|ExecStart=$WORK/contents/usr/sbin/pgchorusd|" "$UNIT" > "$WORK/unit/pgchorusd.service"
check "systemd-analyze verify" systemd-analyze verify --man=no --recursive-errors=no "$WORK/unit/pgchorusd.service"
systemd-analyze security --offline=yes "$WORK/unit/pgchorusd.service" 2>/dev/null | tail -1 | sed 's/^/  /'
check "systemd-analyze security: exposure at most 3.0" \
    systemd-analyze security --offline=yes --threshold=30 "$WORK/unit/pgchorusd.service" >/dev/null 2>&1
CAPS=$(unit_value AmbientCapabilities)
check "AmbientCapabilities are exactly NET_ADMIN NET_RAW NET_BIND_SERVICE" \
    test "$(tr ' ' '\n' <<<"$CAPS" | sort | xargs)" = "CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW"
check "CapabilityBoundingSet equals AmbientCapabilities" test "$(unit_value CapabilityBoundingSet)" = "$CAPS"
# A misspelt capability passes verify silently: let the kernel's names (setpriv) judge them.
SETPRIV_CAPS=$(tr ' ' '\n' <<<"$CAPS" | sed 's/^CAP_//' | tr 'A-Z' 'a-z' | sed 's/^/+/' | paste -sd, -)
check "the capability names are real ($SETPRIV_CAPS)" setpriv --inh-caps="$SETPRIV_CAPS" true
for setting in "Type=notify" "User=pgchorus" "Group=pgchorus" "NoNewPrivileges=yes" "ProtectSystem=strict" \
    "ReadWritePaths=/var/lib/pgchorus" "ProtectHome=yes" "PrivateTmp=yes" "Restart=on-failure" "RuntimeDirectory=pgchorus"; do
    check "unit sets $setting" grep -qx "$setting" "$UNIT"
done
check "RestrictAddressFamilies allows netlink and packet sockets" \
    bash -c "grep '^RestrictAddressFamilies=' '$UNIT' | grep -q AF_NETLINK && grep '^RestrictAddressFamilies=' '$UNIT' | grep -q AF_PACKET"

echo "== 2. a clean Debian 12 root (debootstrap)"
MIRROR=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if ! debootstrap --variant=minbase bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -20 "$WORK/debootstrap.log" >&2
    echo "test-deb: debootstrap from $MIRROR failed" >&2
    exit 1
fi
mount -t proc proc "$ROOT/proc"
in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
# Only what Depends names (without versions), from the archive: proves the binaries need nothing else.
DEP_NAMES=$(sed 's/([^)]*)//g; s/,/ /g; s/|/ /g' <<<"$DEPENDS")
in_root apt-get update -qq >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; exit 1; }
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEP_NAMES >"$WORK/apt.log" 2>&1 \
    || { cat "$WORK/apt.log" >&2; exit 1; }
# Every path in the root but the package database, caches and logs, and what adduser/deluser leave
# for any user they touch (the backups shadow- and gshadow-, their lock directory /run/adduser).
snapshot() {
    chroot "$ROOT" find / -xdev \( -path /proc -o -path /var/lib/dpkg -o -path /var/cache -o -path /var/log \
        -o -path /var/lib/apt -o -path /tmp -o -path /dev -o -path /run/adduser \) -prune -o -print \
        | grep -Ev '^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-$' | LC_ALL=C sort
}
snapshot > "$WORK/before.txt"
cp "$DEB" "$ROOT/tmp/pgchorus.deb"
in_root dpkg -i /tmp/pgchorus.deb >"$WORK/install.log" 2>&1 || { cat "$WORK/install.log" >&2; fail "dpkg -i in the clean root"; }
sed 's/^/  | /' "$WORK/install.log"
check "postinst says the service is enabled but not started" grep -q "enabled but not started" "$WORK/install.log"
check "pgchorus is a system user with no login shell" bash -c "
    line=\$(chroot '$ROOT' getent passwd pgchorus) && uid=\$(cut -d: -f3 <<<\"\$line\") &&
    [ \"\$uid\" -lt 1000 ] && [ \"\$(cut -d: -f7 <<<\"\$line\")\" = /usr/sbin/nologin ]"
check "/usr/sbin/pgchorusd is a link to the one binary, /usr/bin/pgchorus" \
    bash -c "[ -L '$ROOT/usr/sbin/pgchorusd' ] && [ \"\$(readlink '$ROOT/usr/sbin/pgchorusd')\" = ../bin/pgchorus ]"
check_stat "$ROOT" /usr/bin/pgchorus 755 root:root
check_stat "$ROOT" /etc/pgchorus 750 root:pgchorus
check_stat "$ROOT" /etc/pgchorus/pgchorus.toml 640 root:pgchorus
check_stat "$ROOT" /etc/pgchorus/users.txt 640 root:pgchorus
check_stat "$ROOT" /var/lib/pgchorus 750 pgchorus:pgchorus
check_stat "$ROOT" /lib/systemd/system/pgchorusd.service 644 root:root
check "the unit is enabled (multi-user.target wants it)" \
    test -L "$ROOT/etc/systemd/system/multi-user.target.wants/pgchorusd.service"
check "dpkg --verify finds every shipped file intact" in_root dpkg --verify pgchorus
VERSION_OUT=$(in_root pgchorus --version 2>&1 || true)
check "pgchorus --version runs in the clean root ($VERSION_OUT)" test "$VERSION_OUT" = "$(dpkg-deb -f "$DEB" Version | sed 's/-[^-]*$//')"
check "pgchorusd --help runs in the clean root" bash -c "chroot '$ROOT' /usr/sbin/pgchorusd --help | grep -q -- '--config'"
check "the shipped configuration passes config check (as the pgchorus user)" \
    in_root setpriv --reuid=pgchorus --regid=pgchorus --init-groups pgchorus config check /etc/pgchorus/pgchorus.toml
check "an unprivileged user other than pgchorus cannot read the configuration" \
    bash -c "! chroot '$ROOT' setpriv --reuid=nobody --regid=nogroup --clear-groups cat /etc/pgchorus/pgchorus.toml >/dev/null 2>&1"

echo "-- upgrade (the same version reinstalled): state and the admin's edits are kept"
echo "kept" > "$ROOT/var/lib/pgchorus/marker"
sed -i 's/^id = "node1"/id = "node7"/' "$ROOT/etc/pgchorus/pgchorus.toml"
in_root dpkg -i /tmp/pgchorus.deb >"$WORK/upgrade.log" 2>&1 || { cat "$WORK/upgrade.log" >&2; fail "dpkg -i over itself"; }
check "the state directory survived the upgrade" grep -qx kept "$ROOT/var/lib/pgchorus/marker"
check "the edited configuration survived the upgrade" grep -q '^id = "node7"' "$ROOT/etc/pgchorus/pgchorus.toml"
check "the edited configuration is still valid" in_root pgchorus config check /etc/pgchorus/pgchorus.toml
check "no 'enabled but not started' message on upgrade" bash -c "! grep -q 'not started' '$WORK/upgrade.log'"

echo "-- remove, then purge"
in_root dpkg -r pgchorus >/dev/null
check "remove deletes the binaries" test ! -e "$ROOT/usr/sbin/pgchorusd"
check "remove keeps the configuration" test -e "$ROOT/etc/pgchorus/pgchorus.toml"
check "remove keeps the state" test -e "$ROOT/var/lib/pgchorus/marker"
in_root dpkg -P pgchorus >/dev/null
rm -f "$ROOT/tmp/pgchorus.deb"
snapshot > "$WORK/after.txt"
check "purge leaves no file or directory behind" diff -u "$WORK/before.txt" "$WORK/after.txt"
check "purge removes the pgchorus user" bash -c "! chroot '$ROOT' getent passwd pgchorus"
check "purge removes the pgchorus group" bash -c "! chroot '$ROOT' getent group pgchorus"
umount "$ROOT/proc"

echo "== 3. this machine: the packaged daemon, as the unit runs it, in front of a real PostgreSQL"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$DEB" >"$WORK/host-install.log" 2>&1 \
    || { cat "$WORK/host-install.log" >&2; echo "test-deb: cannot install the package here" >&2; exit 1; }
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PG_PORT=$(free_port)
PGDATA_DIR="$WORK/pgdata"
install -d -o postgres -g postgres "$PGDATA_DIR"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA_DIR" -A trust -U postgres >/dev/null
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/server.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA_DIR -c max_prepared_transactions=10" start >/dev/null
# A privileged port proves CAP_NET_BIND_SERVICE; pick one nobody listens on.
PROXY_PORT=""
for candidate in 5432 543 654 765 876 987; do
    if ! ss -Hltn "sport = :$candidate" | grep -q .; then PROXY_PORT=$candidate; break; fi
done
[ -n "$PROXY_PORT" ] || { echo "test-deb: no free privileged port" >&2; exit 1; }
cat > /etc/pgchorus/pgchorus.toml <<EOF
[node]
id = "node1"

[proxy]
listen_address = "127.0.0.1"
listen_port = $PROXY_PORT

[[auth.rules]]
address = "127.0.0.1/32"
method = "trust"

[[backends]]
id = "db1"
host = "127.0.0.1"
port = $PG_PORT

[health_check]
interval = 0.5
EOF

# What systemd would do for this unit: the runtime directory, then ExecStart as User/Group with the umask,
# no supplementary groups but the user's, the ambient capabilities and NoNewPrivileges.
RUNTIME_MODE=$(unit_value RuntimeDirectoryMode)
install -d -o pgchorus -g pgchorus -m "${RUNTIME_MODE:-0755}" "/run/$(unit_value RuntimeDirectory)"
EXEC_START=$(unit_value ExecStart)
# Always started in the background (&): the exec then makes the job's pid pgchorusd's own.
run_as_unit() {
    umask "$(unit_value UMask)"
    exec setpriv --reuid="$(unit_value User)" --regid="$(unit_value Group)" --init-groups \
        --inh-caps="$SETPRIV_CAPS" --ambient-caps="$SETPRIV_CAPS" --no-new-privs "$@"
}
NOTIFY="$WORK/notify.sock"
/usr/bin/python3 - "$NOTIFY" >"$WORK/notify.txt" <<'EOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777); s.settimeout(60)
print(s.recv(4096).decode(), flush=True)
EOF
NOTIFY_PID=$!
PIDS+=("$NOTIFY_PID")
for _ in $(seq 50); do [ -S "$NOTIFY" ] && break; sleep 0.1; done
NOTIFY_SOCKET="$NOTIFY" run_as_unit $EXEC_START >"$WORK/pgchorusd.log" 2>&1 &
DAEMON_PID=$!
PIDS+=("$DAEMON_PID")
for _ in $(seq 300); do grep -q READY=1 "$WORK/notify.txt" && break; kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
check "pgchorusd told systemd READY=1 through NOTIFY_SOCKET" grep -q '^READY=1' "$WORK/notify.txt"
DAEMON_USER=$(ps -o user= -p "$DAEMON_PID" | xargs)
check "pgchorusd runs as pgchorus (not $DAEMON_USER)" test "$DAEMON_USER" = pgchorus
check "pgchorusd listens on the privileged port $PROXY_PORT" bash -c "ss -Hltn 'sport = :$PROXY_PORT' | grep -q ."
check "psql through pgchorusd writes to the backend" psql -X -q -h 127.0.0.1 -p "$PROXY_PORT" -U postgres -d postgres \
    -c "CREATE TABLE packaged (id int PRIMARY KEY, note text)" -c "INSERT INTO packaged VALUES (1, 'through the .deb')"
check "the row is on the backend" test "$(psql -X -At -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'SELECT note FROM packaged')" = "through the .deb"
check "pgchorus status through the admin socket: healthy (exit 0)" pgchorus status
check "the state database is in /var/lib/pgchorus, owned by pgchorus" \
    test "$(stat -c %U /var/lib/pgchorus/state.sqlite 2>/dev/null)" = pgchorus
stop_and_wait "$DAEMON_PID"; STATUS=$STOP_STATUS
check "SIGTERM stops pgchorusd cleanly (exit $STATUS)" test "$STATUS" = 0
if [ "$FAILURES" -gt 0 ] || [ "$STATUS" != 0 ]; then sed 's/^/  pgchorusd | /' "$WORK/pgchorusd.log" | tail -30; fi

echo "-- the virtual IP claimed by the pgchorus user (unit capabilities) in a network namespace"
ip netns add "$NETNS"
ip -n "$NETNS" link set lo up
ip -n "$NETNS" link add pgc0 type veth peer name pgc1
ip -n "$NETNS" link set pgc1 up
ip -n "$NETNS" link set pgc0 up
ip -n "$NETNS" addr add 198.18.0.1/24 dev pgc0
cat > "$WORK/vip.toml" <<EOF
[node]
id = "node1"
state_directory = "/var/lib/pgchorus/vip-test"

[proxy]
listen_address = "127.0.0.1"
listen_port = 0

[[auth.rules]]
method = "trust"

# Nothing listens there: refused at once (the VIP does not wait for backends with health checks off).
[[backends]]
id = "db1"
host = "127.0.0.1"
port = 1

[health_check]
enabled = false

[vip]
mode = "address"
interface = "pgc0"
address = "198.18.0.100/24"

[admin]
socket = "/run/pgchorus/vip-test.sock"
EOF
chmod 0644 "$WORK/vip.toml"
timeout 20 ip netns exec "$NETNS" tcpdump -i pgc0 --immediate-mode -n -c 1 -w "$WORK/garp.pcap" arp >/dev/null 2>&1 &
TCPDUMP_PID=$!
PIDS+=("$TCPDUMP_PID")
sleep 1
ip netns exec "$NETNS" bash -c "$(declare -f run_as_unit unit_value); UNIT='$UNIT' SETPRIV_CAPS='$SETPRIV_CAPS' run_as_unit /usr/sbin/pgchorusd --config '$WORK/vip.toml'" \
    >"$WORK/vip.log" 2>&1 &
VIP_PID=$!
PIDS+=("$VIP_PID")
HELD=no
for _ in $(seq 100); do
    if ip -n "$NETNS" -o addr show dev pgc0 | grep -q '198.18.0.100/24'; then HELD=yes; break; fi
    sleep 0.1
done
check "the pgchorus user added the VIP with netlink (CAP_NET_ADMIN)" test "$HELD" = yes
wait "$TCPDUMP_PID" || true
check "the pgchorus user sent a gratuitous ARP for the VIP (CAP_NET_RAW)" \
    bash -c "tcpdump -n -r '$WORK/garp.pcap' 2>/dev/null | grep -q '198.18.0.100'"
stop_and_wait "$VIP_PID"; VIP_STATUS=$STOP_STATUS
check "SIGTERM stops the VIP node cleanly on a quiet segment (exit $VIP_STATUS)" test "$VIP_STATUS" = 0
check "a clean stop releases the VIP" bash -c "! ip -n '$NETNS' -o addr show dev pgc0 | grep -q 198.18.0.100"
if [ "$HELD" != yes ] || [ "$VIP_STATUS" != 0 ]; then sed 's/^/  vip | /' "$WORK/vip.log" | tail -20; fi
ip netns del "$NETNS"

echo "-- purge on this machine"
dpkg -P pgchorus >/dev/null
check "purge removed /etc/pgchorus and /var/lib/pgchorus" bash -c "[ ! -e /etc/pgchorus ] && [ ! -e /var/lib/pgchorus ]"
check "purge removed the pgchorus user and group" bash -c "! getent passwd pgchorus && ! getent group pgchorus"

echo
if [ "$FAILURES" -gt 0 ]; then
    echo "test-deb: $FAILURES check(s) failed" >&2
    exit 1
fi
echo "test-deb: all checks passed"
