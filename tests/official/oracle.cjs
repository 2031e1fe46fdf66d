// The platforms' official client libraries as an oracle for protocol/rules.py and
// ground/platforms/atproto.py (tests/test_official_clients.py). Reads one JSON string per line
// on stdin, writes one JSON object per line: what @atproto/api's RichText and twitter-text's
// parseTweet / extractUrlsWithIndices make of it.
const readline = require("readline");
const { RichText } = require("@atproto/api");
const twitter = require("twitter-text");

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", (line) => {
  const text = JSON.parse(line);
  const rt = new RichText({ text });
  rt.detectFacetsWithoutResolution();
  const facets = (rt.facets || []).map((f) => ({
    byteStart: f.index.byteStart,
    byteEnd: f.index.byteEnd,
    features: f.features.map((x) => ({ type: x.$type, uri: x.uri, tag: x.tag, did: x.did })),
  }));
  const tweet = twitter.parseTweet(text);
  const urls = twitter.extractUrlsWithIndices(text).map((u) => u.url);
  process.stdout.write(JSON.stringify({
    graphemes: rt.graphemeLength,
    utf8: rt.length,
    facets,
    x_weighted: tweet.weightedLength,
    nfc: text.normalize(),
    x_valid: tweet.valid,
    x_urls: urls,
  }) + "\n");
});
