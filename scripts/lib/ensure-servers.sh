# Sourced by scripts/test and scripts/demo: installs Debian's PostgreSQL and Prometheus
# when they are missing. The tests and the demo start their own instances on 127.0.0.1;
# nothing here starts a daemon.

ensure_servers() {
    local missing=()
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        missing+=(prometheus)
    fi
    if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        missing+=(postgresql)
    fi
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: missing packages: ${missing[*]}; install them or run as root" >&2
        return 1
    fi
    echo "installing ${missing[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
}
