#!/bin/sh
# The official mysql image's contract, on MariaDB: flags alone start the server with them; on the first start
# (an empty data directory) the root password, one database and one user with every right on it are created
# from MYSQL_ROOT_PASSWORD, MYSQL_DATABASE, MYSQL_USER and MYSQL_PASSWORD, by a server without networking (so
# a TCP health check only passes once the real server runs); then the server runs as `mysql`, as PID 1's exec.
set -eu
datadir=/var/lib/mysql
socket=/run/mysqld/mysqld.sock

if [ "${1#-}" != "$1" ]; then
    set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
    exec "$@"
fi
shift

# An SQL string literal: backslashes and quotes doubled (NO_BACKSLASH_ESCAPES is off by default).
literal() {
    printf "'%s'" "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g")"
}
# One line of SQL; printf, not echo: dash's echo would undo the doubled backslashes.
line() {
    printf '%s\n' "$1"
}
# A quoted identifier.
identifier() {
    printf '`%s`' "$(printf '%s' "$1" | sed -e 's/`/``/g')"
}

install -d -o mysql -g mysql -m 0755 /run/mysqld
chown mysql:mysql "$datadir"

if [ ! -d "$datadir/mysql" ]; then
    if [ -z "${MYSQL_ROOT_PASSWORD:-}" ]; then
        echo "docker-entrypoint: the data directory is empty and MYSQL_ROOT_PASSWORD is not set" >&2
        exit 1
    fi
    echo "docker-entrypoint: initialising $datadir" >&2
    mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
        --auth-root-authentication-method=normal --skip-name-resolve >/dev/null
    mariadbd --user=mysql --datadir="$datadir" --skip-networking --socket="$socket" "$@" &
    pid=$!
    tries=0
    until mysqladmin --socket="$socket" --user=root ping --silent >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "docker-entrypoint: the initialisation server did not start" >&2
            exit 1
        fi
        sleep 0.2
    done
    {
        # mariadb-install-db's anonymous users and root@<container id> (which --skip-name-resolve ignores).
        line "DELETE FROM mysql.global_priv WHERE User = '' OR (User = 'root' AND Host <> 'localhost');"
        line "DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';"
        line "FLUSH PRIVILEGES;"
        line "ALTER USER 'root'@'localhost' IDENTIFIED BY $(literal "$MYSQL_ROOT_PASSWORD");"
        line "CREATE USER 'root'@'%' IDENTIFIED BY $(literal "$MYSQL_ROOT_PASSWORD");"
        line "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            line "CREATE DATABASE IF NOT EXISTS $(identifier "$MYSQL_DATABASE");"
        fi
        if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
            line "CREATE USER $(literal "$MYSQL_USER")@'%' IDENTIFIED BY $(literal "$MYSQL_PASSWORD");"
            if [ -n "${MYSQL_DATABASE:-}" ]; then
                line "GRANT ALL PRIVILEGES ON $(identifier "$MYSQL_DATABASE").* TO $(literal "$MYSQL_USER")@'%';"
            fi
        fi
        line "FLUSH PRIVILEGES;"
    } | mariadb --protocol=socket --socket="$socket" --user=root
    MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysqladmin --socket="$socket" --user=root shutdown
    wait "$pid"
    echo "docker-entrypoint: initialised" >&2
fi

exec mariadbd --user=mysql --datadir="$datadir" "$@"
