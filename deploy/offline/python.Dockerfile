# ccsm-offline/python:3.11 — stands in for python:3.11-slim-bookworm where no registry answers (make offline-images).
# Debian bookworm's CPython 3.11, at the path the official image has it (/usr/local/bin/python3): the Dockerfile's
# UV_PYTHON and the venv it builds point there in both stages.
FROM ccsm-offline/debian:bookworm
# Versions come from the bookworm mirror of the day (point releases move; security fixes are the point of a rebuild).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python3 \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && python3 -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version'
# uv in a build stage verifies PyPI's certificates against this bundle (the host's, copied into the base image),
# not against the roots compiled into it.
ENV LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
