// The platforms' official client libraries as an oracle for tests/test_official_clients.py:
// one JSON text per input line, one JSON answer per output line.
//   bsky:  @atproto/api RichText — graphemeLength and detectFacetsWithoutResolution()
//   x:     twitter-text parseTweet (weightedLength, valid) and extractUrlsWithIndices
"use strict";
const readline = require("readline");
const { RichText } = require("@atproto/api");
const twitter = require("twitter-text");

function facets(text) {
  const rt = new RichText({ text });
  rt.detectFacetsWithoutResolution();
  return (rt.facets || []).map((f) => {
    const feat = f.features[0];
    const type = feat.$type.split("#")[1];
    const value = type === "link" ? feat.uri : type === "tag" ? feat.tag : feat.did;
    return { kind: type, value, start: f.index.byteStart, end: f.index.byteEnd };
  });
}

const rl = readline.createInterface({ input: process.stdin, terminal: false });
rl.on("line", (line) => {
  const text = JSON.parse(line);
  const tweet = twitter.parseTweet(text);
  const out = {
    graphemes: new RichText({ text }).graphemeLength,
    facets: facets(text),
    x_weighted: tweet.weightedLength,
    x_urls: twitter.extractUrlsWithIndices(text).map((u) => u.url),
  };
  process.stdout.write(JSON.stringify(out) + "\n");
});
