# Shared by scripts/demo.sh and scripts/test.sh: install what wuos needs on Debian 12.
# shellcheck shell=bash

# Debian packages wuos uses at run time and to build.
WUOS_PACKAGES=(iproute2 nftables iperf3 iputils-ping ethtool graphviz procps psmisc bc xz-utils clang llvm gcc pkg-config kamailio sip-tester qemu-system-x86 linux-image-amd64 busybox-static mininet)

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "wuos: this needs root (network namespaces, cgroups): run it with sudo" >&2
        exit 77
    fi
}

ensure_packages() {
    local missing=()
    for p in "${WUOS_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "== installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        for d in "$HOME/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
            [ -x "$d/cargo" ] && export PATH="$d:$PATH" && break
        done
    fi
    if ! command -v cargo >/dev/null 2>&1; then
        echo "wuos: no Rust toolchain found. wuos needs Rust 1.95 or newer; Debian 12's own cargo is too old." >&2
        echo "      Install it with rustup (https://rustup.rs), then run this command again." >&2
        exit 1
    fi
}
