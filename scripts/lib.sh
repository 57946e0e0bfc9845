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

# Debian 12's rustc is too old for the pinned crates: use rustup's stable toolchain. A cargo
# already on PATH is used if its rustc is at least the workspace's rust-version; with rustup,
# clippy and rustfmt (which scripts/test runs first) are added if missing. The C toolchain links
# the binaries and builds aws-lc's C code, whichever Rust is used.
ensure_rust() {
    ensure_apt_packages curl ca-certificates build-essential pkg-config
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    if ! rust_is_recent && ! command -v rustup >/dev/null 2>&1; then
        say "installing the Rust toolchain with rustup"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v rustup >/dev/null 2>&1 || return 0
    if ! rust_is_recent; then
        say "updating the Rust toolchain (rustc older than the workspace's rust-version)"
        rustup toolchain install stable --profile minimal -c clippy,rustfmt && rustup default stable
    fi
    if ! cargo clippy --version >/dev/null 2>&1 || ! cargo fmt --version >/dev/null 2>&1; then
        rustup component add clippy rustfmt
    fi
}

# Whether rustc is at least the `rust-version` of the workspace's Cargo.toml.
rust_is_recent() {
    local have need
    have=$(rustc --version 2>/dev/null | awk '{ print $2 }')
    need=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" | head -n 1)
    [ -n "$have" ] && [ -n "$need" ] &&
        [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" = "$need" ]
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
