# Shared by scripts/demo and scripts/test: installing what they need on a fresh Debian 12
# machine, and small helpers. Sourced, not run.

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$0: run as root (it creates temporary users and a private mount namespace)" >&2
        exit 1
    fi
}

# Installs the Debian packages given that are not installed yet.
ensure_apt_packages() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Debian 12's rustc is too old for the pinned crates: use rustup's stable toolchain.
ensure_rust() {
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    if command -v cargo >/dev/null 2>&1; then
        return 0
    fi
    ensure_apt_packages curl ca-certificates build-essential pkg-config
    say "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
}

cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# A system-bus-like dbus-daemon config listening on $2 that includes kron's policy file $3
# (the template the integration tests use too).
write_bus_config() {
    sed -e "s|@SOCKET@|$2|g" -e "s|@POLICY@|$3|g" \
        "$(dirname "${BASH_SOURCE[0]}")/private-bus.conf.in" > "$1"
}

wait_for_socket() {
    for _ in $(seq 100); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "timed out waiting for $1" >&2
    return 1
}
