#!/usr/bin/env bash
# Installs the platforms' official client libraries (npm: @atproto/api, twitter-text) into
# .cache/official/ (git-ignored) for tests/test_official_clients.py. Reruns are no-ops.
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR="$PWD/.cache/official"
ATPROTO_API="0.19.19"
TWITTER_TEXT="3.1.0"
STAMP="$DIR/.installed-$ATPROTO_API-$TWITTER_TEXT"
if [ -f "$STAMP" ]; then
    echo "official client libraries already installed in $DIR"
    exit 0
fi
mkdir -p "$DIR"
cd "$DIR"
printf '{"name":"orbitpost-official-clients","private":true,"version":"0.0.0"}\n' > package.json
npm install --no-audit --no-fund "@atproto/api@$ATPROTO_API" "twitter-text@$TWITTER_TEXT"
touch "$STAMP"
echo "official client libraries installed in $DIR"
