"""The bandwidth benchmark stays runnable (its figures are printed, never asserted as timings)."""

from __future__ import annotations

from benchmarks.bench_bandwidth import (
    by_batch_size,
    by_dictionary,
    framing_report,
    make_samples,
    measure,
    real_photos,
)
from benchmarks.corpus import split


def test_benchmark_measures_a_small_mix() -> None:
    texts = split()[1][:20]
    photos = real_photos()[:1]
    row = measure("mix", [make_samples(texts, photos, texts)])
    # Byte counts only (deterministic): the photo codec makes orbitpost beat "codec off".
    assert row.orbitpost < row.plain < row.http_json
    assert row.raw > 100_000
    assert any("Ed25519 batch signatures" in line for line in framing_report(texts))


def test_format_2_framing_beats_format_1_on_text() -> None:
    texts = split()[1][:60]
    row = measure("text-only", [make_samples(texts, [], [""])])
    # Byte counts only: one signature per astronaut and no per-post id/author framing.
    assert row.orbitpost < 0.5 * row.format1
    lines = by_batch_size(make_samples(texts, [], [""]), sizes=(1, 60))
    assert len(lines) == 4 and lines[-1].split()[0] == "60"


def test_dictionary_table_compares_v2_with_the_current_one() -> None:
    lines = by_dictionary(split()[1][:20], sizes=(1, 10))
    rows = [line.split() for line in lines[2:]]
    assert [r[:2] for r in rows] == [["raw", "1"], ["raw", "10"], ["clean", "1"], ["clean", "10"]]
    assert all(0 < float(x) < 10 for r in rows for x in r[2:])
