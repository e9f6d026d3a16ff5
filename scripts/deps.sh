#!/usr/bin/env bash
# Install the Debian packages Postern needs to build, run and test, if any is
# missing. Idempotent and quiet when everything is there. Used by `make run`,
# `make test`, `make bench` and `make fuzz`.
set -euo pipefail

BUILD_PKGS="build-essential meson ninja-build pkg-config clang libclang-rt-14-dev clang-format
 libevent-dev libc-ares-dev libssl-dev libsqlite3-dev libyaml-dev zlib1g-dev libjansson-dev"
TEST_PKGS="libcmocka-dev python3 python3-pytest python3-aiosmtpd python3-dnslib swaks postfix
 sqlite3 openssl"

want="$BUILD_PKGS"
case "${1:-all}" in
    build) ;;
    all) want="$want $TEST_PKGS" ;;
esac

missing=()
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    # Postfix is installed only for its smtp-source/smtp-sink tools and as a
    # benchmark competitor: keep its package from configuring a live MTA.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The daemon drops to this user when started as root (etc/postern.yaml).
if [ "$(id -u)" -eq 0 ] && ! getent passwd postern >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postern
fi
