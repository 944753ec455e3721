#!/usr/bin/env bash
# Install the pinned Claude Code CLI (deploy/claude-code/package*.json) into a
# git-ignored prefix inside the repo, for tests/e2e/test_claude_code.py.
#
#   deploy/install-claude-code.sh [PREFIX]      # default: .venv/claude-code
#
# Idempotent: does nothing when PREFIX already holds the pinned lock file and a
# working `claude`. Installs Node.js and npm with apt only when `node` is missing
# and we are root; otherwise says what to install. Prints the CLI's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=deploy/claude-code
PREFIX=${1:-.venv/claude-code}
BIN=$PREFIX/node_modules/.bin/claude
PINNED=$(sed -n 's/.*"@anthropic-ai\/claude-code": *"\([^"]*\)".*/\1/p' "$SRC/package.json" | head -1)

installed_ok() {
	[ -x "$BIN" ] && cmp -s "$SRC/package-lock.json" "$PREFIX/package-lock.json" &&
		"$BIN" --version 2>/dev/null | grep -q "^$PINNED "
}

if installed_ok; then
	echo "claude-code $PINNED already installed: $BIN"
	exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing Node.js and npm (apt-get install nodejs npm)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
	else
		echo "Node.js/npm not found: install them (e.g. 'apt-get install nodejs npm') and rerun" >&2
		exit 1
	fi
fi

mkdir -p "$PREFIX"
cp "$SRC/package.json" "$SRC/package-lock.json" "$PREFIX/"
# The package's engines field asks for Node >= 22; the CLI itself is a native
# binary (an optional dependency per platform), so an older npm/Node installs it fine.
npm ci --prefix "$PREFIX" --no-audit --no-fund --loglevel=error --engine-strict=false

# Newer npm versions may skip install scripts; the postinstall is what puts the
# native binary in place of the bin/claude.exe stub. Run it when it did not happen.
if ! "$BIN" --version >/dev/null 2>&1; then
	(cd "$PREFIX/node_modules/@anthropic-ai/claude-code" && node install.cjs)
fi

version=$("$BIN" --version)
case "$version" in
"$PINNED "*) echo "installed claude-code $version: $BIN" ;;
*)
	echo "installed CLI reports '$version', expected $PINNED" >&2
	exit 1
	;;
esac
