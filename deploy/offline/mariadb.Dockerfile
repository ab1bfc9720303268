# ccsm-offline/mariadb:10.11 — stands in for mysql:8.4 where no registry answers (make offline-images).
# Debian bookworm's MariaDB, the server the test suite runs on natively. The entrypoint honours the official
# image's MYSQL_ROOT_PASSWORD, MYSQL_DATABASE, MYSQL_USER and MYSQL_PASSWORD on the first start and passes
# server flags through; mysqladmin (mariadb-client) answers the compose health check.
FROM ccsm-offline/debian:bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# server-core and the client only: no Galera, no init scripts, no pre-initialised data directory.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 mysql \
    && useradd --system --no-log-init --uid 999 --gid mysql --home-dir /var/lib/mysql --shell /usr/sbin/nologin mysql \
    && apt-get update \
    && apt-get install -y --no-install-recommends mariadb-server-core mariadb-client \
    && rm -rf /var/lib/apt/lists/* /var/lib/mysql \
    && install -d -o mysql -g mysql -m 0750 /var/lib/mysql \
    && install -d -o mysql -g mysql -m 0755 /run/mysqld \
    && mariadbd --version | grep -q ' 10\.11\.' \
    && command -v mysqladmin
COPY mariadb.cnf /etc/mysql/mariadb.conf.d/99-container.cnf
COPY mariadb-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
EXPOSE 3306
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["mariadbd"]
