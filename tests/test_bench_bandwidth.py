"""The bandwidth benchmark stays runnable (its figures are printed, never asserted as timings)."""

from __future__ import annotations

from benchmarks.bench_bandwidth import framing_report, make_samples, measure, real_photos
from benchmarks.corpus import split


def test_benchmark_measures_a_small_mix() -> None:
    texts = split()[1][:20]
    photos = real_photos()[:1]
    row = measure("mix", [make_samples(texts, photos, texts)])
    # Byte counts only (deterministic): the photo codec makes orbitpost beat "codec off".
    assert row.orbitpost < row.plain < row.http_json
    assert row.raw > 100_000
    assert any("Ed25519 signature" in line for line in framing_report(texts))
