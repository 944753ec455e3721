#!/usr/bin/env bash
# Install what the web console's browser tests (tests/browser) drive: Debian's Chromium,
# and Playwright's Python package in the venv, which drives that Chromium through
# executable_path (Playwright's own browser download is never used or fetched).
#
#   deploy/install-browser.sh [VENV]      # default: .venv
#
# Idempotent: does nothing when both are there. Installs Chromium with apt only when it is
# missing and we are root; otherwise says what to install. Without it the browser tests
# skip (unless ANTIGV_REQUIRE_BROWSER=1, as in CI, which makes them fail).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${1:-.venv}
CHROMIUM=${ANTIGV_CHROMIUM:-/usr/bin/chromium}
# Playwright's package never downloads a browser by itself; this makes sure nothing it
# runs does either.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

if [ -x "$CHROMIUM" ]; then
	:
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "installing Chromium (apt-get install chromium)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
	echo "Chromium not found at $CHROMIUM: install it with 'apt-get install chromium' and rerun" >&2
	exit 1
fi

if ! "$VENV/bin/python" -c "import playwright.async_api" >/dev/null 2>&1; then
	echo "installing Playwright's Python package into $VENV"
	"$VENV/bin/pip" install --quiet -c deploy/constraints.txt playwright
fi

echo "browser tests ready: $("$CHROMIUM" --version 2>/dev/null | head -1), playwright $("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("playwright"))')"
