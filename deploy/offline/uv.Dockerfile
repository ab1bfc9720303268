# ccsm-offline/uv — stands in for ghcr.io/astral-sh/uv: the same two binaries at the same paths, taken from uv's
# PyPI wheel (the build context is that wheel's bin directory, at the version the Dockerfile's UV_IMAGE names).
FROM scratch
COPY uv uvx /
ENTRYPOINT ["/uv"]
