#!/bin/sh
# As the official image's entrypoint: without a config file, protected mode is turned off, because the
# container's network is the boundary (compose's own network; nothing publishes the port).
set -eu
if [ "${1#-}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
    case "${2:-}" in
        *.conf) ;;
        *) shift; set -- redis-server --protected-mode no "$@" ;;
    esac
fi
exec "$@"
