"""Print a Markdown table of results from report.json files (docs/performance.md's table).

python -m simlink.table out-iss-ku/report.json out-degraded/report.json ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .report import _fmt_s

HEADER = (
    "| profile | workload | published / queued | latency p50 · p90 · p99 | text-only p50 | wire / payload "
    "| receipts share of wire | app resent | TCP resent | goodput / rate (backlogged) | left onboard |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def row(rep: dict) -> str:  # type: ignore[type-arg]
    p, b, lk, lat = rep["posts"], rep["bytes"], rep["link"], rep["latency_s"]
    tr = rep.get("traffic_by_kind") or {}
    rc = tr.get("receipts")
    share = (
        f"{(rc['request_bytes'] + rc['response_bytes']) / b['on_wire']:.0%}" if rc and b["on_wire"] else "–"
    )
    g = lk["goodput_per_rate_while_backlogged"]
    return (
        f"| {rep['profile']['name']} | {rep['workload']['name']} | {p['published']} / {p['queued']} "
        f"| {_fmt_s(lat['all']['p50'])} · {_fmt_s(lat['all']['p90'])} · {_fmt_s(lat['all']['p99'])} "
        f"| {_fmt_s(lat['text_only']['p50'])} | ×{b['wire_per_payload']:.2f} | {share} "
        f"| {(b['resent_by_application'] or 0) / 1e3:,.0f} kB | {(b['retransmitted_by_tcp'] or 0) / 1e3:,.0f} kB "
        f"| {'–' if g is None else f'{g:.0%}'} | {p['still_queued_onboard']} |"
    )


def main(paths: list[str]) -> None:
    print(HEADER)
    for path in paths:
        print(row(json.loads(Path(path).read_text())))


if __name__ == "__main__":
    main(sys.argv[1:])
