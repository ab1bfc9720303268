# ccsm-offline/redis:7.0 — stands in for redis:7.4-alpine where no registry answers (make offline-images).
# Debian bookworm's redis-server, run as the redis user in /data (the compose volume), as in the official image.
FROM ccsm-offline/debian:bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The redis user gets the official image's uid and gid (999) before the package would pick one.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --no-log-init --uid 999 --gid redis --home-dir /data --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis -m 0750 /data \
    && redis-server --version | grep -q ' v=7\.0\.'
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER 999:999
EXPOSE 6379
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
