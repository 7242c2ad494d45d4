#!/bin/sh
# Corral's container entry point (the image's ENTRYPOINT; run directly by tests/deploy/test_deploy_entrypoint.py).
#
#   serve                (default) run the server in the foreground (exec'd, so it gets the container's SIGTERM)
#   pull [MODEL...]      pull models into the store, then exit: compose's init service. Models come from the
#                        arguments, else from CORRAL_PULL_MODELS (separated by spaces or commas). A private server on
#                        loopback (CORRAL_INIT_PORT, default 11499) does the pulling and is stopped afterwards.
#                        CORRAL_PULL_INSECURE=1 allows plain-HTTP registries.
#   healthcheck          exit 0 when this container's server is ready (GET /readyz), else 1: the image's HEALTHCHECK
#   anything else        run as a command (e.g. `corral list`)
set -eu

: "${CORRAL_HOST:=0.0.0.0:11434}"
export CORRAL_HOST

# The port of CORRAL_HOST (host:port, scheme://host:port, :port or a bare host meaning 11434).
port_of() {
    rest=${1#*://}
    rest=${rest%%/*}
    case "$rest" in
        *\]:*) echo "${rest##*:}" ;;
        \[*) echo 11434 ;;
        *:*) echo "${rest##*:}" ;;
        *) echo 11434 ;;
    esac
}

# GET /readyz on 127.0.0.1:$1; python3 is in every image that has Corral (the slim base has no curl).
ready() {
    python3 - "$1" <<'EOF'
import sys
import urllib.request

try:
    with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
}

pull() {
    models="$*"
    if [ -z "$models" ]; then
        models=$(printf '%s' "${CORRAL_PULL_MODELS:-}" | tr ',' ' ')
    fi
    if [ -z "$(printf '%s' "$models" | tr -d ' \t\n')" ]; then
        echo "corral-entrypoint: no models to pull (CORRAL_PULL_MODELS is empty); the bundled models need none" >&2
        return 0
    fi
    port=${CORRAL_INIT_PORT:-11499}
    CORRAL_HOST="127.0.0.1:$port" corral serve &
    server=$!
    trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
    trap 'exit 143' TERM INT
    tries=0
    until ready "$port"; do
        if ! kill -0 "$server" 2>/dev/null; then
            echo "corral-entrypoint: the server for pulling exited during start-up" >&2
            return 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -ge 600 ]; then
            echo "corral-entrypoint: the server for pulling was not ready within 60 s" >&2
            return 1
        fi
        sleep 0.1
    done
    insecure=""
    case "${CORRAL_PULL_INSECURE:-}" in
        1 | true | TRUE | True | yes) insecure="--insecure" ;;
    esac
    status=0
    for model in $models; do
        echo "corral-entrypoint: pulling $model" >&2
        # shellcheck disable=SC2086 # $insecure is empty or one flag
        if ! CORRAL_HOST="127.0.0.1:$port" corral pull $insecure "$model"; then
            echo "corral-entrypoint: pulling $model failed" >&2
            status=1
        fi
    done
    return "$status"
}

command=${1:-serve}
if [ "$#" -gt 0 ]; then
    shift
fi
case "$command" in
    serve)
        exec corral serve
        ;;
    pull)
        pull "$@"
        ;;
    healthcheck)
        ready "$(port_of "$CORRAL_HOST")"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
