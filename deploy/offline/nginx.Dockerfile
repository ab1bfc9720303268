# ccsm-offline/nginx:1.22 — stands in for nginx:1.27-alpine where no registry answers (make offline-images).
# Debian bookworm's nginx (the one the edge tests run natively), the official image's nginx.conf layout
# (conf.d/*.conf included at the http level, logs on stdout/stderr) and its graceful stop signal; wget for the
# compose health check, as busybox has it in the official image.
FROM ccsm-offline/debian:bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nginx-light wget \
    && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/* \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && nginx -v 2>&1 | grep -q 'nginx/1\.22\.'
COPY nginx.conf /etc/nginx/nginx.conf
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
