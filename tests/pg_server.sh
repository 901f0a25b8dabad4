#!/usr/bin/env bash
# A throw-away PostgreSQL server for cio-pg's tests, examples and benchmarks.
#
#   pg_server.sh start DIR [PORT]   create and start a cluster in DIR, print its env
#   pg_server.sh stop DIR           stop it at once and remove DIR
#   pg_server.sh restart DIR        pg_ctl restart -m fast (clients are cut off)
#   pg_server.sh env DIR            print the env lines of a started cluster
#
# `start` prints two shell lines, also written to DIR/env:
#   export CIO_PG_DSN='host=127.0.0.1 port=N dbname=cio user=U'
#   export CIO_PG_DATADIR='DIR'
# so that `eval "$(bash tests/pg_server.sh start /tmp/pg_me)"` sets both.
# Everything else goes to stderr.
#
# The cluster is made for speed, not durability: trust authentication,
# fsync, synchronous_commit and full_page_writes off, max_connections 200,
# listening on 127.0.0.1 only (PORT, or a free port picked at random) and on
# a unix socket in DIR (when DIR's path is short enough for one). It has a
# database `cio`; its superuser is the system user that runs it.
#
# As root, the server runs as an unprivileged user (PostgreSQL refuses root):
# `postgres` when Debian's package made it, else a system user `ciopg`
# created here. DIR is then owned by that user. When that user cannot reach
# DIR (a parent directory closed to it), the cluster itself lives in a
# private directory under /tmp, recorded in DIR/home, and DIR keeps only the
# env file. As an ordinary user, the server simply runs as that user.
#
# start is idempotent: on a DIR whose server runs it prints the env and does
# nothing else; on a DIR whose cluster exists but is stopped it starts it
# again (on its port). A DIR that is not empty and was not made by this
# script is refused, and stop removes only what this script made.
#
# A server of your own: when CIO_PG_DSN is set and CIO_PG_DATADIR is not,
# start starts nothing and prints the given DSN (the tests then use that
# server; the test that restarts the server skips). stop on a DIR that does
# not exist does nothing. The binaries: $CIO_PG_BINDIR, else
# `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin, else PATH.
set -euo pipefail

die() { echo "pg_server: $*" >&2; exit 1; }
note() { echo "pg_server: $*" >&2; }

usage() {
  echo "usage: pg_server.sh start DIR [PORT] | stop DIR | restart DIR | env DIR" >&2
  exit 2
}

# The directory holding initdb, pg_ctl and postgres.
find_bindir() {
  local d
  if [ -n "${CIO_PG_BINDIR:-}" ]; then
    [ -x "$CIO_PG_BINDIR/initdb" ] || die "CIO_PG_BINDIR=$CIO_PG_BINDIR has no initdb"
    echo "$CIO_PG_BINDIR"; return
  fi
  # Debian's pg_config comes with libpq-dev and names the server's bindir.
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  fi
  # Debian installs the server's programs outside PATH, one dir per version.
  d="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  if command -v initdb >/dev/null 2>&1; then
    d="$(dirname "$(readlink -f "$(command -v initdb)")")"
    if [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  fi
  die "no PostgreSQL server found (on Debian: apt-get install postgresql)"
}

# The user the server runs as ("" = the caller).
server_user() {
  if [ "$(id -u)" -ne 0 ]; then echo ""; return; fi
  if id -u postgres >/dev/null 2>&1; then echo postgres; return; fi
  if ! id -u ciopg >/dev/null 2>&1; then
    note "creating the system user ciopg to run the server"
    useradd --system --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ciopg >/dev/null 2>&1 ||
      id -u ciopg >/dev/null 2>&1 || die "cannot create the user ciopg"
  fi
  echo ciopg
}

# as_user CMD...: runs CMD as the server's user, from a directory it can
# read (initdb and postgres complain when the working directory is closed).
as_user() {
  if [ -z "$user" ]; then
    (cd "$home" 2>/dev/null || cd /; "$@")
  elif command -v runuser >/dev/null 2>&1; then
    (cd /; runuser -u "$user" -- "$@")
  else
    (cd /; setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@")
  fi
}

# Whether TCP port $1 has a listener on this machine (IPv4 or IPv6).
port_busy() {
  local hex
  hex="$(printf '%04X' "$1")"
  # State 0A is LISTEN in /proc/net/tcp{,6}; the local port is field 2's tail.
  awk -v p=":$hex" 'NR > 1 && $4 == "0A" && substr($2, length($2) - 4) == p { f = 1 }
                    END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

pick_port() {
  local p
  for _ in $(seq 1 50); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! port_busy "$p"; then echo "$p"; return; fi
  done
  die "no free port found"
}

# Reads the layout of an existing DIR: the cluster's home, its data dir and
# (as root) the user who owns it.
load_layout() {
  home="$dir"
  if [ -f "$dir/home" ]; then home="$(cat "$dir/home")"; fi
  data="$home/data"
  if [ "$(id -u)" -eq 0 ] && [ -d "$data" ]; then
    user="$(stat -c %U "$data")"
    [ "$user" != root ] || user=""
  fi
}

# Whether the postmaster of postmaster.pid is alive. A zombie is not: where
# nothing reaps orphans (some containers' init), a killed postmaster stays
# one, and pg_ctl and postgres itself would take it for a running server.
postmaster_alive() {
  local pid state
  pid="$(head -1 "$data/postmaster.pid" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/stat" ] || return 1
  state="$(sed 's/.*) \(.\).*/\1/' "/proc/$pid/stat" 2>/dev/null || true)"
  [ -n "$state" ] && [ "$state" != Z ]
}

running() {
  postmaster_alive && as_user "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1
}

# Removes the lock files of a server that died without removing them.
clear_stale_locks() {
  if [ -f "$data/postmaster.pid" ] && ! postmaster_alive; then
    rm -f "$data/postmaster.pid" "$home"/.s.PGSQL.*
  fi
}

print_env() {
  [ -f "$dir/env" ] || die "$dir has no env file (not started by pg_server.sh?)"
  cat "$dir/env"
}

# The server's log, for the error message of a failed start.
show_log() {
  if [ -f "$home/log" ]; then
    echo "--- $home/log (tail)" >&2
    tail -n 20 "$home/log" >&2 || true
  fi
}

# Starts the cluster on $port; returns nonzero when the server did not come up.
pg_start() {
  as_user "$bindir/pg_ctl" start -w -t 60 -D "$data" -l "$home/log" \
    -o "-p $port" >/dev/null 2>&1
}

# The cluster's settings, written once after initdb.
write_conf() {
  local sockdir="$home"
  # A unix socket path is at most 107 bytes: "$home/.s.PGSQL.NNNNN" must fit.
  if [ $((${#home} + 17)) -gt 100 ]; then
    note "no unix socket: $home is too long a path for one"
    sockdir=""
  fi
  cat >>"$data/postgresql.conf" <<CONF

# pg_server.sh (cio's tests): a throw-away cluster, speed over durability.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = off
log_min_messages = warning
CONF
}

cmd_start() {
  local want_port="${1:-}" fresh=0
  if [ -n "${CIO_PG_DSN:-}" ] && [ -z "${CIO_PG_DATADIR:-}" ]; then
    note "CIO_PG_DSN is set: using that server, starting none"
    printf "export CIO_PG_DSN='%s'\n" "$CIO_PG_DSN"
    return
  fi
  if [ -n "$want_port" ] && ! [[ "$want_port" =~ ^[0-9]+$ ]]; then die "bad port: $want_port"; fi

  if [ -e "$dir" ]; then
    [ -d "$dir" ] || die "$dir exists and is not a directory"
    if [ -f "$dir/.cio-pg-server" ]; then
      load_layout
      if [ -f "$data/PG_VERSION" ] && [ -f "$dir/env" ]; then
        if running; then print_env; return; fi
        # A cluster made here whose server stopped (a crash, a reboot):
        # start it again on its own port.
        port="$(sed -n "s/.*port=\([0-9]*\).*/\1/p" "$dir/env" | head -1)"
        note "restarting the stopped cluster in $dir"
        clear_stale_locks
        pg_start || { show_log; die "the server in $dir did not start"; }
        print_env; return
      fi
      # An interrupted start: begin again.
      [ "$home" = "$dir" ] || rm -rf "$home"
      rm -rf "$dir"
    elif [ -n "$(ls -A "$dir")" ]; then
      die "$dir is not empty and was not made by pg_server.sh; refusing to use it"
    fi
  fi

  user="$(server_user)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  : >"$dir/.cio-pg-server"
  home="$dir"
  if [ -n "$user" ]; then
    chown "$user:" "$dir"
    # The server's user must reach DIR; if a parent is closed to it, the
    # cluster lives in a private directory under /tmp instead.
    if ! as_user test -w "$dir" 2>/dev/null; then
      home="$(mktemp -d /tmp/cio-pg.XXXXXX)"
      chown "$user:" "$home"
      echo "$home" >"$dir/home"
    fi
  fi
  data="$home/data"

  local t0 t1
  t0="$(date +%s.%N)"
  as_user "$bindir/initdb" -D "$data" --auth=trust --no-locale --encoding=UTF8 \
    --no-sync --no-instructions >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  write_conf

  # A port picked at random may be taken between the check and the bind:
  # then try another.
  for _ in 1 2 3 4 5; do
    port="${want_port:-$(pick_port)}"
    if pg_start; then fresh=1; break; fi
    [ -z "$want_port" ] || break
    as_user "$bindir/pg_ctl" stop -D "$data" -m immediate >/dev/null 2>&1 || true
  done
  [ "$fresh" = 1 ] || { show_log; die "the server did not start (port $port)"; }

  local dbuser
  dbuser="${user:-$(id -un)}"
  as_user "$bindir/psql" -X -q -h 127.0.0.1 -p "$port" -U "$dbuser" -d postgres \
    -c "CREATE DATABASE cio" >/dev/null 2>"$dir/psql.log" ||
    { cat "$dir/psql.log" >&2; die "cannot create the database cio"; }
  t1="$(date +%s.%N)"
  {
    printf "export CIO_PG_DSN='host=127.0.0.1 port=%s dbname=cio user=%s'\n" "$port" "$dbuser"
    printf "export CIO_PG_DATADIR='%s'\n" "$dir"
  } >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  note "PostgreSQL $(cat "$data/PG_VERSION") on 127.0.0.1:$port, data in $data, started in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s"
  print_env
}

cmd_stop() {
  [ -e "$dir" ] || return 0
  [ -f "$dir/.cio-pg-server" ] || die "$dir was not made by pg_server.sh; not touching it"
  load_layout
  if [ -f "$data/postmaster.pid" ]; then
    as_user "$bindir/pg_ctl" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1 || true
    # A server pg_ctl could not stop: kill the postmaster (its backends
    # notice that their parent died and exit).
    local pid
    pid="$(head -1 "$data/postmaster.pid" 2>/dev/null || true)"
    if postmaster_alive && grep -qE '^(postgres|postmaster)$' "/proc/$pid/comm"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  [ "$home" = "$dir" ] || rm -rf "$home"
  rm -rf "$dir"
}

cmd_restart() {
  [ -f "$dir/.cio-pg-server" ] || die "$dir has no cluster made by pg_server.sh"
  load_layout
  port="$(sed -n "s/.*port=\([0-9]*\).*/\1/p" "$dir/env" | head -1)"
  if running; then
    as_user "$bindir/pg_ctl" restart -D "$data" -m fast -w -t 60 -l "$home/log" \
      -o "-p $port" >/dev/null 2>&1 || { show_log; die "restart failed"; }
  else
    clear_stale_locks
    pg_start || { show_log; die "the server in $dir did not start"; }
  fi
}

[ $# -ge 2 ] || usage
action="$1"
dir="${2%/}"
[ -n "$dir" ] || usage
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
# DIR is written single-quoted into the env file and postgresql.conf.
case "$dir" in *"'"* | *"\\"*) die "DIR must not hold a quote or a backslash: $dir" ;; esac
user="" home="$dir" data="$dir/data" port=""
case "$action" in
  start)   [ $# -le 3 ] || usage; bindir="$(find_bindir)"; cmd_start "${3:-}" ;;
  stop)    [ $# -eq 2 ] || usage; bindir="$(find_bindir)"; cmd_stop ;;
  restart) [ $# -eq 2 ] || usage; bindir="$(find_bindir)"; cmd_restart ;;
  env)     [ $# -eq 2 ] || usage; print_env ;;
  *)       usage ;;
esac
