#!/bin/sh
# The official postgres image's contract, as far as the tests and deploy/overlays/dev use it:
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and PGDATA make a cluster on first start, and a
# command of `postgres -c ...` (or bare `-c ...`) passes its settings to the server.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD-}" ]; then
        echo "postgres: POSTGRES_PASSWORD must be set" >&2
        exit 1
    fi
    mkdir -p "$PGDATA"
    chmod 700 "$PGDATA"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pwfile"
    # Connections from other containers, with the password.
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        echo "CREATE DATABASE \"$POSTGRES_DB\";" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
fi
if [ "${1:-}" = postgres ]; then
    shift
fi
# Debian's socket directory, where the manifests mount one; /tmp where nothing does (/run is root's).
sockets=/var/run/postgresql
if [ ! -w "$sockets" ]; then
    sockets=/tmp
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories="$sockets" "$@"
