#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1, one cluster per directory, for `make run` and the tests.
#
#   pg.sh start DIR   create the cluster in DIR/pgdata unless it exists, start it, make sure
#                     database "otelstore" exists, and print its DSN on stdout (a cluster already
#                     running is left as it is and its DSN printed). The first start picks a free
#                     port and records it in DIR/port; every later start in DIR uses that port
#                     again, so a DSN stays valid across a stop and a start.
#   pg.sh stop DIR    stop the cluster (fast shutdown); one that is not running is no error
#
# Authentication is "trust" for superuser "postgres", reachable only from this machine. The socket
# and the server log are in DIR/pgrun. initdb refuses to run as root, so as root the cluster runs
# as the "postgres" system user (or "nobody" where there is none), who owns DIR/pgdata and DIR/pgrun
# and so must be able to reach DIR: a 0700 parent such as pytest's tmp_path is refused with a message.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SUPERUSER=postgres
DATABASE=otelstore

die() {
	echo "pg.sh: $*" >&2
	exit 1
}

usage() {
	die "usage: pg.sh start|stop DIR"
}

[[ $# -eq 2 && ($1 == start || $1 == stop) ]] || usage
command=$1
if [[ $command == stop && ! -d $2 ]]; then
	exit 0
fi
mkdir -p "$2"
dir=$(cd "$2" && pwd)
data=$dir/pgdata
run=$dir/pgrun

os_user=
if [[ $(id -u) -eq 0 ]]; then
	if id postgres >/dev/null 2>&1; then os_user=postgres; else os_user=nobody; fi
fi

# Runs a server-side command as the cluster's owner.
as_owner() {
	if [[ -n $os_user ]]; then
		runuser -u "$os_user" -- "$@"
	else
		"$@"
	fi
}

running() {
	[[ -d $data ]] && as_owner "$PG_BIN/pg_ctl" status -D "$data" >/dev/null 2>&1
}

# The fourth line of postmaster.pid is the port the running server listens on.
port() {
	sed -n 4p "$data/postmaster.pid"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Succeeds when nothing listens on 127.0.0.1:$1. SO_REUSEADDR, as PostgreSQL sets it, so that the
# TIME_WAIT connections a server just stopped leaves behind do not count.
port_free() {
	python3 -c 'import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}

# The port recorded by the first start in DIR, or a free one, which is then recorded.
cluster_port() {
	local port_file=$dir/port port
	if [[ -s $port_file ]]; then
		port=$(<"$port_file")
		[[ $port =~ ^[0-9]+$ ]] || die "$port_file does not hold a port number: $port"
		port_free "$port" ||
			die "port $port (recorded in $port_file) is in use by another program: stop it, or delete $port_file to pick a new port"
	else
		port=$(free_port)
		echo "$port" >"$port_file"
	fi
	echo "$port"
}

init() {
	mkdir -p "$data" "$run"
	chmod 700 "$data"
	if [[ -n $os_user ]]; then
		chown "$os_user:" "$data" "$run"
		as_owner test -w "$data" ||
			die "user $os_user cannot write $data: make its parent directories searchable (chmod o+x) or use a directory under /tmp"
	fi
	echo "pg.sh: creating a PostgreSQL cluster in $data" >&2
	as_owner "$PG_BIN/initdb" --pgdata="$data" --username="$SUPERUSER" --auth=trust \
		--encoding=UTF8 --locale=C.UTF-8 --no-instructions >"$run/initdb.log" 2>&1 ||
		die "initdb failed, see $run/initdb.log"
	cat >>"$data/postgresql.conf" <<CONF

# pg.sh: reachable only from this machine, over TCP and a socket of its own.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$run'
CONF
}

start() {
	if ! running; then
		[[ -f $data/PG_VERSION ]] || init
		local port
		port=$(cluster_port)
		as_owner "$PG_BIN/pg_ctl" start --pgdata="$data" --log="$run/server.log" --wait --timeout=60 \
			--options="-p $port" >/dev/null ||
			die "PostgreSQL did not start, see $run/server.log"
	fi
	local port
	port=$(port)
	local exists
	exists=$(psql --no-psqlrc -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres -tAc \
		"SELECT 1 FROM pg_database WHERE datname = '$DATABASE'")
	if [[ $exists != 1 ]]; then
		psql --no-psqlrc -q -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres -c "CREATE DATABASE $DATABASE" >&2
	fi
	echo "postgres://$SUPERUSER@127.0.0.1:$port/$DATABASE"
}

stop() {
	if running; then
		as_owner "$PG_BIN/pg_ctl" stop --pgdata="$data" --mode=fast --wait >/dev/null
	fi
}

"$command"
