#!/usr/bin/env bash
# Installs what the storefront's browser tests need: Debian's Chromium and
# playwright-core (from npm, pinned by livedrop-http/tests/browser/package-lock.json).
# Idempotent. Prints the browser's path last.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

chromium="${LIVEDROP_TEST_BROWSER:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "browser: installing Debian's chromium" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium >&2
fi
if [ ! -x "$chromium" ]; then
  echo "browser: $chromium is missing after the install" >&2
  exit 1
fi

if ! command -v npm >/dev/null; then
  echo "browser: npm is missing (Node.js 20 is needed)" >&2
  exit 1
fi
if [ ! -d livedrop-http/tests/browser/node_modules/playwright-core ]; then
  echo "browser: installing playwright-core" >&2
  npm ci --prefix livedrop-http/tests/browser --no-audit --no-fund >&2
fi
echo "$chromium"
