#!/usr/bin/env bash
# Installs the Debian 12 packages Postern's build, tests and demo need,
# only those that are missing.  Usage: scripts/install-deps.sh [--bench]
# (--bench adds what `make bench` compares against and plots with).
set -euo pipefail

pkgs=(gcc make pkg-config
      libmicrohttpd-dev libcurl4-openssl-dev libsodium-dev libjansson-dev libinih-dev
      check clang libclang-rt-14-dev python3 curl
      openssl squid nginx-light)
if [ "${1:-}" = "--bench" ]; then
	pkgs+=(httptunnel gnuplot-nox socat)
fi

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#pkgs[@]} packages present"
	exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
else
	SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
