#!/usr/bin/env bash
# Make sure the PostgreSQL, Redis and IMAP (Dovecot) servers the test suite talks to are reachable,
# and write .services/env (sourced by `make test`) with CONTACTGATE_TEST_PG_DSN,
# CONTACTGATE_TEST_REDIS_URL and CONTACTGATE_TEST_IMAP_*.
#
# Usage: scripts/ensure-services.sh [ensure|stop|purge]
#   ensure (default)  find or start the services, then write .services/env
#   stop              stop the throwaway servers this script started (never a system server)
#   purge             stop them, then delete their data
#
# For each service, the first of these that works is used:
#   1. CONTACTGATE_TEST_PG_DSN / CONTACTGATE_TEST_REDIS_URL already set: verified, then used as is.
#   2. A server already answering on 127.0.0.1:$CG_PG_PORT (5432) / 127.0.0.1:$CG_REDIS_PORT (6379)
#      (PostgreSQL must let user `postgres` log in without a password).
#   3. This script's throwaway server, if already running on $CG_PG_LOCAL_PORT (55432) /
#      $CG_REDIS_LOCAL_PORT (56379).
#   4. Server packages are installed with apt-get when missing (root only); for PostgreSQL a stopped
#      Debian cluster configured on $CG_PG_PORT is started with pg_ctlcluster.
#   5. A throwaway server is started: PostgreSQL in .services/pg (trust auth, user postgres),
#      Redis with no persistence, both bound to 127.0.0.1 on the local ports above.
# IMAP is always this script's own Dovecot unless CONTACTGATE_TEST_IMAP_HOST is set (then
# CONTACTGATE_TEST_IMAP_PORT and CONTACTGATE_TEST_IMAP_PASSWORD too: that server must let any user
# name log in with that password, as the throwaway one does). The throwaway Dovecot runs from its
# own config in .services/dovecot (not the system's, not systemd's): plain IMAP on
# 127.0.0.1:$CG_IMAP_LOCAL_PORT (51143) and IMAPS on $CG_IMAPS_LOCAL_PORT (51993, a self-signed
# certificate in .services/dovecot/tls), static passdb (any user, password `secret`), maildirs in
# .services/dovecot/mail/<user>, log in .services/dovecot/log. Package: dovecot-imapd.
# A service that cannot be provided is an error (exit 1), never a silent skip.
#
# CG_PG_PORT / CG_REDIS_PORT exist so the fallback paths can be exercised on a machine whose
# standard ports are busy: e.g. `CG_PG_PORT=1 CG_REDIS_PORT=1 scripts/ensure-services.sh`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES_DIR="$ROOT/.services"
HOST=127.0.0.1
PG_PORT=${CG_PG_PORT:-5432}
REDIS_PORT=${CG_REDIS_PORT:-6379}
PG_LOCAL_PORT=${CG_PG_LOCAL_PORT:-55432}
REDIS_LOCAL_PORT=${CG_REDIS_LOCAL_PORT:-56379}
PG_DATADIR_RECORD="$SERVICES_DIR/pg.datadir"   # where the throwaway cluster lives (see pg_datadir)
REDIS_PIDFILE="$SERVICES_DIR/redis.pid"
REDIS_LOG="$SERVICES_DIR/redis.log"
IMAP_LOCAL_PORT=${CG_IMAP_LOCAL_PORT:-51143}
IMAPS_LOCAL_PORT=${CG_IMAPS_LOCAL_PORT:-51993}
IMAP_PASSWORD=secret                          # the throwaway Dovecot's static passdb
DOVECOT_DIR_RECORD="$SERVICES_DIR/dovecot.dir" # where the throwaway Dovecot lives (see dovecot_dir)
IMAP_ENV=()                                   # name value ... for .services/env (see ensure_imap)

say()  { printf '%s\n' "$*"; }
info() { printf 'ensure-services: %s\n' "$*" >&2; }
die()  { printf 'ensure-services: ERROR: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# Print the last lines of a log file to stderr (for error messages).
show_log() {
    [[ -s $1 ]] || return 0
    info "last lines of $1:"
    tail -n 20 "$1" | sed 's/^/    /' >&2
}

# Hide a password in a URL before printing it.
redact() { sed -E 's#(://[^:/@]*:)[^@/]*@#\1***@#' <<<"$1"; }

# TCP connect test without any client installed.
# shellcheck disable=SC2016  # $0/$1 expand in the inner bash
tcp_open() { timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }

# Host and port from a URL such as postgresql://user:pw@host:5432/db or redis://host:6379/0.
url_host_port() {
    local url=$1 default_port=$2
    if [[ $url =~ ^[a-z]+://([^@/]*@)?([^:/?]+)(:([0-9]+))? ]]; then
        printf '%s %s\n' "${BASH_REMATCH[2]}" "${BASH_REMATCH[4]:-$default_port}"
    else
        return 1
    fi
}

# Run a command as the `postgres` OS user when we are root (initdb and postgres refuse to run as
# root), else as ourselves. cd / so that user needs no access to $PWD.
as_pg() {
    if ! is_root; then
        "$@"
    elif have runuser; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && su -s /bin/sh postgres -c "$(printf '%q ' "$@")")
    fi
}

# Install Debian packages (root only).
APT_UPDATED=""
apt_install() {
    is_root || die "$* is not installed and this script is not running as root, so it cannot install it: run 'sudo apt-get install $*', or point CONTACTGATE_TEST_PG_DSN / CONTACTGATE_TEST_REDIS_URL at running servers"
    have apt-get || die "$* is not installed and there is no apt-get to install it with"
    info "installing $* with apt-get"
    if [[ -z $APT_UPDATED ]]; then
        apt-get update -q </dev/null >&2 9>&- || die "apt-get update failed"
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" </dev/null >&2 9>&- \
        || die "apt-get install $* failed"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

pg_dsn() { printf 'postgresql://postgres@%s:%s/postgres\n' "$HOST" "$1"; }

# 0 if a PostgreSQL server on 127.0.0.1:$1 accepts connections and lets `postgres` log in;
# 1 if none answers (yet); 2 if one answers but refuses that login (a stock Debian cluster wants a
# password over TCP), which waiting will not change.
pg_accepts() {
    local port=$1
    if have pg_isready; then
        pg_isready -q -h "$HOST" -p "$port" -U postgres -d postgres -t 3 >/dev/null 2>&1 || return 1
    else
        tcp_open "$HOST" "$port" || return 1
    fi
    if have psql; then
        if ! PGCONNECT_TIMEOUT=5 psql -X -w -q -At -h "$HOST" -p "$port" -U postgres -d postgres \
                -c 'select 1' >/dev/null 2>&1; then
            info "a server answers on $HOST:$port but user postgres cannot log in there without a password"
            return 2
        fi
    fi
}

# Wait up to $2 seconds for pg_accepts $1.
pg_wait() {
    local port=$1 tries=$2 rc
    while :; do
        rc=0
        pg_accepts "$port" || rc=$?
        [[ $rc -ne 0 ]] || return 0
        [[ $rc -ne 2 ]] || return 1
        tries=$((tries - 1))
        [[ $tries -gt 0 ]] || return 1
        sleep 1
    done
}

# 0 if the DSN given in the environment works.
pg_dsn_ok() {
    local dsn=$1 hp
    if have psql; then
        PGCONNECT_TIMEOUT=5 psql -X -w -q -At -d "$dsn" -c 'select 1' >/dev/null 2>&1
    elif hp=$(url_host_port "$dsn" 5432); then
        info "psql is not installed: checking only that ${hp% *}:${hp#* } accepts TCP connections"
        tcp_open "${hp% *}" "${hp#* }"
    else
        die "psql is not installed and CONTACTGATE_TEST_PG_DSN is not a postgresql://host:port URL, so it cannot be verified"
    fi
}

# Directory holding the newest installed server binaries (initdb, pg_ctl, postgres).
pg_server_bindir() {
    local d found=""
    while IFS= read -r d; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && found=$d
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    if [[ -z $found ]] && have initdb && have pg_ctl; then
        d=$(dirname "$(command -v initdb)")
        [[ -x $d/postgres ]] && found=$d
    fi
    [[ -n $found ]] && printf '%s\n' "$found"
}

# Start every stopped Debian cluster configured on $PG_PORT; 0 if one was started.
start_system_pg() {
    have pg_lsclusters && have pg_ctlcluster || return 1
    local ver name port status rest started=1
    while read -r ver name port status rest; do
        [[ $port == "$PG_PORT" && $status != online* ]] || continue
        info "starting the system PostgreSQL cluster $ver/$name on port $port"
        if pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start </dev/null >&2 9>&-; then
            started=0
        else
            info "pg_ctlcluster could not start $ver/$name"
        fi
    done < <(pg_lsclusters -h 2>/dev/null)
    return $started
}

# The throwaway cluster's data directory: .services/pg, unless the postgres OS user (which must own
# it when we are root) cannot reach the checkout, e.g. one under /root; then a directory in /tmp.
pg_datadir() {
    if [[ -s $PG_DATADIR_RECORD ]]; then
        cat "$PG_DATADIR_RECORD"
    elif ! is_root || as_pg test -x "$SERVICES_DIR"; then
        printf '%s\n' "$SERVICES_DIR/pg"
    else
        printf '%s/contactgate-pg-%s/pg\n' "${TMPDIR:-/tmp}" "$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
    fi
}

start_throwaway_pg() {
    local bindir datadir base log major
    bindir=$(pg_server_bindir) || die "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found"
    if is_root && ! id -u postgres >/dev/null 2>&1; then
        die "running as root, but there is no 'postgres' OS user to run initdb/postgres as (they refuse root)"
    fi
    datadir=$(pg_datadir)
    base=$(dirname "$datadir")
    log="$base/pg.log"
    major=$("$bindir/postgres" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')

    mkdir -p "$base"
    touch "$log"
    if is_root; then
        [[ $base == "$SERVICES_DIR" ]] || chown postgres: "$base"
        chown postgres: "$log"
    fi

    if [[ -s $datadir/PG_VERSION && $(cat "$datadir/PG_VERSION") != "$major" ]]; then
        info "throwaway cluster in $datadir is from PostgreSQL $(cat "$datadir/PG_VERSION"), not $major: recreating it"
        as_pg "$bindir/pg_ctl" -D "$datadir" stop -m immediate >/dev/null 2>&1 9>&- || true
        rm -rf "$datadir"
    fi
    if [[ ! -s $datadir/PG_VERSION ]]; then
        rm -rf "$datadir"
        mkdir -p "$datadir"
        chmod 700 "$datadir"
        is_root && chown postgres: "$datadir"
        info "creating a throwaway PostgreSQL $major cluster in $datadir"
        as_pg "$bindir/initdb" -D "$datadir" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
            >"$log" 2>&1 9>&- || { show_log "$log"; die "initdb failed (log: $log)"; }
    elif as_pg "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
        # Running, but not answering where we expect it (another port?): restart it with our options.
        info "restarting the throwaway cluster in $datadir"
        as_pg "$bindir/pg_ctl" -D "$datadir" stop -m fast -w >/dev/null 2>&1 9>&- || true
    fi
    printf '%s\n' "$datadir" >"$PG_DATADIR_RECORD"

    info "starting the throwaway PostgreSQL on $HOST:$PG_LOCAL_PORT (log: $log)"
    # fsync off: this cluster holds nothing worth keeping, and the tests run faster without it.
    as_pg "$bindir/pg_ctl" -D "$datadir" \
        -o "-p $PG_LOCAL_PORT -k /tmp -c listen_addresses=$HOST -c fsync=off" \
        -l "$log" -w -t 60 start </dev/null >/dev/null 9>&- \
        || { show_log "$log"; die "could not start the throwaway PostgreSQL (is port $PG_LOCAL_PORT taken?)"; }
    pg_wait "$PG_LOCAL_PORT" 30 \
        || { show_log "$log"; die "the throwaway PostgreSQL started but does not accept user postgres on $HOST:$PG_LOCAL_PORT"; }
}

stop_throwaway_pg() {
    local datadir bindir
    datadir=$(pg_datadir)
    [[ -s $datadir/PG_VERSION ]] || return 0
    bindir=$(pg_server_bindir) || return 0
    if as_pg "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
        as_pg "$bindir/pg_ctl" -D "$datadir" stop -m fast -w >/dev/null 9>&- \
            || die "could not stop the throwaway PostgreSQL in $datadir"
        say "PostgreSQL: stopped the throwaway server ($datadir)"
    fi
}

ensure_pg() {
    if [[ -n ${CONTACTGATE_TEST_PG_DSN:-} ]]; then
        pg_dsn_ok "$CONTACTGATE_TEST_PG_DSN" \
            || die "CONTACTGATE_TEST_PG_DSN is set ($(redact "$CONTACTGATE_TEST_PG_DSN")) but no server answers there"
        PG_DSN=$CONTACTGATE_TEST_PG_DSN
        say "PostgreSQL: CONTACTGATE_TEST_PG_DSN from the environment ($(redact "$PG_DSN"))"
        return
    fi
    if pg_accepts "$PG_PORT"; then
        PG_DSN=$(pg_dsn "$PG_PORT")
        say "PostgreSQL: existing server on $HOST:$PG_PORT ($PG_DSN)"
        return
    fi
    if pg_accepts "$PG_LOCAL_PORT"; then
        PG_DSN=$(pg_dsn "$PG_LOCAL_PORT")
        say "PostgreSQL: throwaway server already running on $HOST:$PG_LOCAL_PORT ($PG_DSN)"
        return
    fi
    info "no PostgreSQL accepting user postgres on $HOST:$PG_PORT"
    if ! pg_server_bindir >/dev/null; then
        apt_install postgresql
    fi
    # A cluster we start gets time to come up; one the package install started needs only a look.
    local tries=1
    start_system_pg && tries=30
    if pg_wait "$PG_PORT" "$tries"; then
        PG_DSN=$(pg_dsn "$PG_PORT")
        say "PostgreSQL: system cluster on $HOST:$PG_PORT, started now ($PG_DSN)"
        return
    fi
    start_throwaway_pg
    PG_DSN=$(pg_dsn "$PG_LOCAL_PORT")
    say "PostgreSQL: throwaway server started on $HOST:$PG_LOCAL_PORT, data in $(pg_datadir) ($PG_DSN)"
}

# ---------------------------------------------------------------------------------------------
# Redis

redis_url() { printf 'redis://%s:%s/0\n' "$HOST" "$1"; }

# 0 if a Redis server on $1:$2 answers PING with PONG (no password).
redis_pong() {
    local host=$1 port=$2 reply
    if have redis-cli; then
        reply=$(timeout 5 redis-cli -h "$host" -p "$port" ping 2>/dev/null) || return 1
    else
        # shellcheck disable=SC2016  # $0/$1/$l expand in the inner bash
        reply=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf "PING\r\n" >&3 && IFS= read -r l <&3 && printf "%s" "$l"' \
            "$host" "$port" 2>/dev/null) || return 1
    fi
    reply=${reply%$'\r'}
    [[ $reply == PONG || $reply == +PONG ]]
}

redis_url_ok() {
    local url=$1 hp reply
    if have redis-cli; then
        reply=$(timeout 5 redis-cli -u "$url" ping 2>/dev/null) || return 1
        [[ $reply == PONG ]]
    elif hp=$(url_host_port "$url" 6379); then
        redis_pong "${hp% *}" "${hp#* }"
    else
        die "redis-cli is not installed and CONTACTGATE_TEST_REDIS_URL is not a redis://host:port URL, so it cannot be verified"
    fi
}

start_throwaway_redis() {
    have redis-server || die "redis-server not found"
    info "starting a throwaway Redis on $HOST:$REDIS_LOCAL_PORT (log: $REDIS_LOG)"
    rm -f "$REDIS_PIDFILE"
    redis-server --daemonize yes --port "$REDIS_LOCAL_PORT" --bind "$HOST" --save '' --appendonly no \
        --dir "$SERVICES_DIR" --logfile "$REDIS_LOG" --pidfile "$REDIS_PIDFILE" </dev/null >/dev/null 9>&- \
        || { show_log "$REDIS_LOG"; die "redis-server failed to start"; }
    local tries=20
    until redis_pong "$HOST" "$REDIS_LOCAL_PORT"; do
        tries=$((tries - 1))
        [[ $tries -gt 0 ]] || { show_log "$REDIS_LOG"; die "the throwaway Redis does not answer on $HOST:$REDIS_LOCAL_PORT (is the port taken?)"; }
        sleep 0.5
    done
}

stop_throwaway_redis() {
    local pid
    [[ -s $REDIS_PIDFILE ]] || return 0
    pid=$(cat "$REDIS_PIDFILE")
    # Only a live redis-server that this script started (its pidfile) is stopped.
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && grep -q redis /proc/"$pid"/comm 2>/dev/null; then
        if ! { have redis-cli && timeout 5 redis-cli -h "$HOST" -p "$REDIS_LOCAL_PORT" shutdown nosave >/dev/null 2>&1; }; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
        local tries=20
        while kill -0 "$pid" 2>/dev/null; do
            tries=$((tries - 1))
            [[ $tries -gt 0 ]] || die "the throwaway Redis (pid $pid) did not stop"
            sleep 0.5
        done
        say "Redis: stopped the throwaway server (pid $pid)"
    fi
    rm -f "$REDIS_PIDFILE"
}

ensure_redis() {
    if [[ -n ${CONTACTGATE_TEST_REDIS_URL:-} ]]; then
        redis_url_ok "$CONTACTGATE_TEST_REDIS_URL" \
            || die "CONTACTGATE_TEST_REDIS_URL is set ($(redact "$CONTACTGATE_TEST_REDIS_URL")) but no Redis answers PING there"
        REDIS_URL=$CONTACTGATE_TEST_REDIS_URL
        say "Redis: CONTACTGATE_TEST_REDIS_URL from the environment ($(redact "$REDIS_URL"))"
        return
    fi
    if redis_pong "$HOST" "$REDIS_PORT"; then
        REDIS_URL=$(redis_url "$REDIS_PORT")
        say "Redis: existing server on $HOST:$REDIS_PORT ($REDIS_URL)"
        return
    fi
    if redis_pong "$HOST" "$REDIS_LOCAL_PORT"; then
        REDIS_URL=$(redis_url "$REDIS_LOCAL_PORT")
        say "Redis: throwaway server already running on $HOST:$REDIS_LOCAL_PORT ($REDIS_URL)"
        return
    fi
    info "no Redis answering PING on $HOST:$REDIS_PORT"
    if ! have redis-server; then
        apt_install redis-server
        # The package may have started its own server on the standard port.
        if redis_pong "$HOST" "$REDIS_PORT"; then
            REDIS_URL=$(redis_url "$REDIS_PORT")
            say "Redis: newly installed system server on $HOST:$REDIS_PORT ($REDIS_URL)"
            return
        fi
    fi
    start_throwaway_redis
    REDIS_URL=$(redis_url "$REDIS_LOCAL_PORT")
    say "Redis: throwaway server started on $HOST:$REDIS_LOCAL_PORT ($REDIS_URL)"
}

# ---------------------------------------------------------------------------------------------
# IMAP (Dovecot)

# 0 if an IMAP server on $1:$2 greets and lets user $3 log in with password $4; 1 if nobody
# greets there; 2 if a server greets but refuses the login.
imap_login() {
    local rc=0
    # shellcheck disable=SC2016  # $0..$3 and $l expand in the inner bash
    timeout 10 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        IFS= read -r l <&3 || exit 1
        [[ $l == "* OK"* ]] || exit 1
        pw=${3//\\/\\\\}; pw=${pw//\"/\\\"}
        printf "a LOGIN \"%s\" \"%s\"\r\nb LOGOUT\r\n" "$2" "$pw" >&3
        while IFS= read -r l <&3; do
            case $l in "a OK"*) exit 0 ;; "a NO"*|"a BAD"*) exit 2 ;; esac
        done
        exit 2' "$1" "$2" "$3" "$4" 2>/dev/null || rc=$?
    [[ $rc -le 2 ]] || rc=1   # timeout's 124 and friends: nobody answered in time
    return $rc
}

# The throwaway Dovecot's ports: the ones its running master was configured with; else the
# defaults, moved up past ports something else holds (another checkout's throwaway Dovecot,
# say: a CI clone beside a developer's checkout). CG_IMAP_LOCAL_PORT set by hand is kept.
choose_dovecot_ports() {
    [[ -z ${CG_IMAP_LOCAL_PORT:-} ]] || return 0
    local dir ports tries=0
    dir=$(dovecot_dir)
    if dovecot_pid "$dir" >/dev/null && [[ -s $dir/dovecot.conf ]]; then
        mapfile -t ports < <(sed -n 's/^ *port = \([0-9]*\)$/\1/p' "$dir/dovecot.conf")
        if [[ ${#ports[@]} -ge 2 ]]; then
            IMAP_LOCAL_PORT=${ports[0]} IMAPS_LOCAL_PORT=${ports[1]}
            return 0
        fi
    fi
    while tcp_open "$HOST" "$IMAP_LOCAL_PORT" || tcp_open "$HOST" "$IMAPS_LOCAL_PORT"; do
        tries=$((tries + 1))
        [[ $tries -le 50 ]] || die "no free port pair for the throwaway Dovecot from ${CG_IMAPS_LOCAL_PORT:-51993}; set CG_IMAP_LOCAL_PORT"
        IMAP_LOCAL_PORT=$((IMAP_LOCAL_PORT + 1)) IMAPS_LOCAL_PORT=$((IMAPS_LOCAL_PORT + 1))
    done
    [[ $tries -eq 0 ]] || info "ports ${CG_IMAP_LOCAL_PORT:-51143}/${CG_IMAPS_LOCAL_PORT:-51993} are taken: the throwaway Dovecot takes $IMAP_LOCAL_PORT/$IMAPS_LOCAL_PORT"
}

# Wait up to $1 seconds for the throwaway Dovecot to let a probe user log in.
imap_wait() {
    local tries=$1 rc
    while :; do
        rc=0
        imap_login "$HOST" "$IMAP_LOCAL_PORT" probe@example.test "$IMAP_PASSWORD" || rc=$?
        [[ $rc -ne 0 ]] || return 0
        [[ $rc -ne 2 ]] || return 1
        tries=$((tries - 1))
        [[ $tries -gt 0 ]] || return 1
        sleep 1
    done
}

# The user Dovecot's mail processes run as (they own the maildirs): `dovecot` when we are root
# (Dovecot refuses to run them as root), else ourselves.
dovecot_mail_user() { if is_root; then printf 'dovecot\n'; else id -un; fi; }

# Run a command as that user, from /.
as_mail_user() {
    if ! is_root; then
        "$@"
    elif have runuser; then
        (cd / && runuser -u dovecot -- "$@")
    else
        (cd / && su -s /bin/sh dovecot -c "$(printf '%q ' "$@")")
    fi
}

# The throwaway Dovecot's directory: .services/dovecot, unless the mail user cannot reach the
# checkout (one under /root, say); then a directory in /tmp.
dovecot_dir() {
    if [[ -s $DOVECOT_DIR_RECORD ]]; then
        cat "$DOVECOT_DIR_RECORD"
    elif ! is_root || ! id -u dovecot >/dev/null 2>&1 || as_mail_user test -x "$SERVICES_DIR"; then
        printf '%s\n' "$SERVICES_DIR/dovecot"
    else
        printf '%s/contactgate-dovecot-%s\n' "${TMPDIR:-/tmp}" "$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
    fi
}

dovecot_binary() {
    local d
    for d in "$(command -v dovecot 2>/dev/null)" /usr/sbin/dovecot; do
        [[ -n $d && -x $d ]] && { printf '%s\n' "$d"; return 0; }
    done
    return 1
}

dovecot_has_imap() { [[ -x /usr/lib/dovecot/imap || -x /usr/libexec/dovecot/imap ]]; }

# The master's pid if the throwaway Dovecot in $1 is running (its base_dir's master.pid).
dovecot_pid() {
    local pid
    [[ -s $1/run/master.pid ]] || return 1
    pid=$(cat "$1/run/master.pid")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && grep -q dovecot /proc/"$pid"/comm 2>/dev/null \
        && printf '%s\n' "$pid"
}

# A self-signed certificate for 127.0.0.1 / localhost, made once.
dovecot_tls() {
    local dir=$1/tls
    [[ -s $dir/cert.pem && -s $dir/key.pem ]] && return 0
    have openssl || apt_install openssl
    mkdir -p "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=localhost" \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1 </dev/null \
        || die "openssl could not make the throwaway Dovecot's certificate in $dir"
    chmod 600 "$dir/key.pem"
}

write_dovecot_conf() {
    local dir=$1 user group uid gid internal login
    user=$(dovecot_mail_user)
    uid=$(id -u "$user")
    gid=$(id -g "$user")
    group=$(id -gn "$user")
    if is_root; then internal=dovecot; login=dovenull; else internal=$user; login=$user; fi
    cat >"$dir/dovecot.conf" <<CONF
# Written by scripts/ensure-services.sh: the test suite's throwaway Dovecot. Not the system's
# /etc/dovecot: nothing there is read. Rewritten on every start.
base_dir = $dir/run
state_dir = $dir/state
instance_name = contactgate-test
protocols = imap
listen = $HOST
log_path = $dir/log
info_log_path = $dir/log
# Tests log in over plain IMAP on 127.0.0.1, and fail logins on purpose: no delay for them.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
# Trusted: no growing delay after failed logins from 127.0.0.1 (Dovecot's auth penalty).
login_trusted_networks = $HOST/32
ssl = yes
ssl_cert = <$dir/tls/cert.pem
ssl_key = <$dir/tls/key.pem
default_internal_user = $internal
default_internal_group = $group
default_login_user = $login
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid
last_valid_gid = $gid
mail_uid = $uid
mail_gid = $gid
mail_location = maildir:$dir/mail/%u
mail_max_userip_connections = 1000
# Any user name logs in with the one password; each test picks a fresh user, so a fresh mailbox.
passdb {
  driver = static
  args = password=$IMAP_PASSWORD
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$dir/mail/%u
}
namespace inbox {
  inbox = yes
  separator = /
}
service imap-login {
  # No chroot: a server that is not root cannot, and this one serves only tests on 127.0.0.1.
  chroot =
  inet_listener imap {
    address = $HOST
    port = $IMAP_LOCAL_PORT
  }
  inet_listener imaps {
    address = $HOST
    port = $IMAPS_LOCAL_PORT
    ssl = yes
  }
}
service anvil {
  chroot =
}
service stats {
  unix_listener stats-reader {
    mode = 0600
  }
  unix_listener stats-writer {
    mode = 0660
  }
}
CONF
}

start_throwaway_dovecot() {
    local bin dir
    bin=$(dovecot_binary) || die "dovecot not found"
    dovecot_has_imap || die "dovecot is installed but its imap server is not (install dovecot-imapd)"
    dir=$(dovecot_dir)
    mkdir -p "$dir/mail" "$dir/run" "$dir/state"
    [[ $dir == "$SERVICES_DIR/dovecot" ]] || printf '%s\n' "$dir" >"$DOVECOT_DIR_RECORD"
    touch "$dir/log"
    if is_root; then
        id -u dovecot >/dev/null 2>&1 && id -u dovenull >/dev/null 2>&1 \
            || die "running as root, but the OS users dovecot and dovenull (from the dovecot-core package) are missing"
        chown dovecot: "$dir/mail"
        as_mail_user test -w "$dir/mail" || die "the dovecot user cannot write $dir/mail"
    fi
    dovecot_tls "$dir"
    write_dovecot_conf "$dir"
    info "starting a throwaway Dovecot on $HOST:$IMAP_LOCAL_PORT (IMAPS $IMAPS_LOCAL_PORT), config $dir/dovecot.conf (log: $dir/log)"
    "$bin" -c "$dir/dovecot.conf" </dev/null >>"$dir/log" 2>&1 9>&- \
        || { show_log "$dir/log"; die "dovecot failed to start (is port $IMAP_LOCAL_PORT or $IMAPS_LOCAL_PORT taken?)"; }
    imap_wait 20 \
        || { show_log "$dir/log"; die "the throwaway Dovecot started but does not let a user log in on $HOST:$IMAP_LOCAL_PORT"; }
}

stop_throwaway_dovecot() {
    local dir pid
    dir=$(dovecot_dir)
    pid=$(dovecot_pid "$dir") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local tries=20
    while kill -0 "$pid" 2>/dev/null; do
        tries=$((tries - 1))
        [[ $tries -gt 0 ]] || die "the throwaway Dovecot (pid $pid) did not stop"
        sleep 0.5
    done
    say "Dovecot: stopped the throwaway server (pid $pid)"
}

ensure_imap() {
    if [[ -n ${CONTACTGATE_TEST_IMAP_HOST:-} ]]; then
        [[ -n ${CONTACTGATE_TEST_IMAP_PORT:-} && -n ${CONTACTGATE_TEST_IMAP_PASSWORD:-} ]] \
            || die "CONTACTGATE_TEST_IMAP_HOST is set, so CONTACTGATE_TEST_IMAP_PORT and CONTACTGATE_TEST_IMAP_PASSWORD must be too"
        local rc=0
        imap_login "$CONTACTGATE_TEST_IMAP_HOST" "$CONTACTGATE_TEST_IMAP_PORT" probe@example.test \
            "$CONTACTGATE_TEST_IMAP_PASSWORD" || rc=$?
        case $rc in
            0) ;;
            2) die "the IMAP server at $CONTACTGATE_TEST_IMAP_HOST:$CONTACTGATE_TEST_IMAP_PORT refuses user probe@example.test with CONTACTGATE_TEST_IMAP_PASSWORD (the tests need any user name to log in with it)" ;;
            *) die "CONTACTGATE_TEST_IMAP_HOST is set but no IMAP server greets at $CONTACTGATE_TEST_IMAP_HOST:$CONTACTGATE_TEST_IMAP_PORT" ;;
        esac
        IMAP_ENV=(CONTACTGATE_TEST_IMAP_HOST "$CONTACTGATE_TEST_IMAP_HOST"
                  CONTACTGATE_TEST_IMAP_PORT "$CONTACTGATE_TEST_IMAP_PORT"
                  CONTACTGATE_TEST_IMAP_PASSWORD "$CONTACTGATE_TEST_IMAP_PASSWORD")
        local var
        for var in CONTACTGATE_TEST_IMAPS_PORT CONTACTGATE_TEST_IMAP_CA_FILE CONTACTGATE_TEST_IMAP_DOVECOT_CONF; do
            [[ -z ${!var:-} ]] || IMAP_ENV+=("$var" "${!var}")
        done
        say "IMAP: CONTACTGATE_TEST_IMAP_HOST from the environment ($CONTACTGATE_TEST_IMAP_HOST:$CONTACTGATE_TEST_IMAP_PORT)"
        return
    fi
    local dir state=started
    choose_dovecot_ports
    if imap_wait 1; then
        state="already running"
    else
        dir=$(dovecot_dir)
        # A master whose listener does not answer (say, a half-dead one) is stopped first.
        if dovecot_pid "$dir" >/dev/null; then
            info "the throwaway Dovecot in $dir runs but does not answer: restarting it"
            stop_throwaway_dovecot
        fi
        if ! dovecot_binary >/dev/null || ! dovecot_has_imap; then
            apt_install dovecot-imapd
        fi
        start_throwaway_dovecot
    fi
    dir=$(dovecot_dir)
    # Tests restart the server through its config, so it must be this checkout's own.
    dovecot_pid "$dir" >/dev/null && [[ -s $dir/dovecot.conf ]] \
        || die "something answers IMAP on $HOST:$IMAP_LOCAL_PORT, but it is not this checkout's throwaway Dovecot (no live master in $dir/run/master.pid): stop it or set CG_IMAP_LOCAL_PORT"
    IMAP_ENV=(CONTACTGATE_TEST_IMAP_HOST "$HOST"
              CONTACTGATE_TEST_IMAP_PORT "$IMAP_LOCAL_PORT"
              CONTACTGATE_TEST_IMAPS_PORT "$IMAPS_LOCAL_PORT"
              CONTACTGATE_TEST_IMAP_PASSWORD "$IMAP_PASSWORD"
              CONTACTGATE_TEST_IMAP_CA_FILE "$dir/tls/cert.pem"
              CONTACTGATE_TEST_IMAP_DOVECOT_CONF "$dir/dovecot.conf")
    say "IMAP: throwaway Dovecot $state on $HOST:$IMAP_LOCAL_PORT (IMAPS $IMAPS_LOCAL_PORT), any user, password $IMAP_PASSWORD ($dir)"
}

# ---------------------------------------------------------------------------------------------

write_env() {
    local tmp
    tmp=$(mktemp "$SERVICES_DIR/env.XXXXXX")
    {
        printf '# Written by scripts/ensure-services.sh; sourced by make test.\n'
        printf 'export CONTACTGATE_TEST_PG_DSN=%q\n' "$PG_DSN"
        printf 'export CONTACTGATE_TEST_REDIS_URL=%q\n' "$REDIS_URL"
        local i
        for ((i = 0; i < ${#IMAP_ENV[@]}; i += 2)); do
            printf 'export %s=%q\n' "${IMAP_ENV[i]}" "${IMAP_ENV[i + 1]}"
        done
    } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$SERVICES_DIR/env"
}

main() {
    local cmd=${1:-ensure}
    case $cmd in
        ensure|stop|purge) ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; return 0 ;;
        *) die "unknown command '$cmd' (expected ensure, stop or purge)" ;;
    esac

    mkdir -p "$SERVICES_DIR"
    # One run at a time. Every daemon is started with fd 9 closed, so none inherits the lock.
    exec 9>"$SERVICES_DIR/.lock"
    if have flock; then
        flock -w 300 9 || die "another ensure-services.sh run holds $SERVICES_DIR/.lock"
    fi

    case $cmd in
        ensure)
            rm -f "$SERVICES_DIR/env"   # a failed run must not leave an old answer behind
            ensure_pg
            ensure_redis
            ensure_imap
            write_env
            ;;
        stop)
            stop_throwaway_pg
            stop_throwaway_redis
            stop_throwaway_dovecot
            ;;
        purge)
            stop_throwaway_pg
            stop_throwaway_redis
            stop_throwaway_dovecot
            local datadir dovecot
            datadir=$(pg_datadir)
            dovecot=$(dovecot_dir)
            rm -rf "$dovecot" "$DOVECOT_DIR_RECORD"
            rm -rf "$datadir" "$PG_DATADIR_RECORD" "$SERVICES_DIR/env"
            # The /tmp fallback directory is ours alone; .services itself is left to the caller.
            [[ $(dirname "$datadir") == "$SERVICES_DIR" ]] || rm -rf "$(dirname "$datadir")"
            ;;
    esac
}

main "$@"
