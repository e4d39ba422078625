#!/usr/bin/env bash
# Debian packages the source proxies read: WordNet glosses (text) and Fashion-MNIST (images); and the
# headless browser the dashboard's tests drive through Playwright (chromium, chromium-driver).
set -euo pipefail
missing=()
[ -d /usr/share/wordnet ] || missing+=(wordnet-base)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
$SUDO apt-get install -y -q "${missing[@]}" >/dev/null || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
