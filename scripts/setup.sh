#!/usr/bin/env bash
# Installs what psync's build and tests need on a fresh Debian machine.
# Idempotent: installs only what is missing. Sourced by scripts/test and scripts/psync.
set -euo pipefail

psync_need_cargo() {
    if command -v cargo >/dev/null 2>&1; then return; fi
    [ -x "$HOME/.cargo/bin/cargo" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return; }
    echo "psync setup: installing the Rust toolchain with rustup" >&2
    psync_apt curl ca-certificates gcc
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
}

# psync_apt PKG... : apt-get install the packages that are not installed yet.
psync_apt() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "psync setup: missing packages ${missing[*]} (run as root to install them)" >&2
        return 1
    fi
    echo "psync setup: apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null 2>&1
        apt-get install -y -qq "${missing[@]}" >/dev/null
    }
}
