"""The report: figures as JSON, a PNG of queue depth and link use, and a short summary.

Definitions (also in docs/simulation.md, "Reading a report"):
- latency: a post's queued → published on every one of its accounts, in seconds.
- bytes on the wire: application bytes carried by TCP both ways (HTTP headers and bodies,
  what a proxy or a packet capture's TCP payload shows). ``ip_bytes`` adds TCP/IP headers,
  ACKs, handshakes and TCP retransmissions (virtual time, and real time through linkemu's
  packet link, whose bytes on the wire are these IP bytes).
- payload: the text and photo bytes of the posts that reached ground.
- goodput / link rate while up: payload bits delivered / (seconds the link was up × rate).
  "while backlogged" divides by the up-seconds during which something was waiting onboard,
  which is what the protocol controls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .result import PostOutcome, RunResult, TcpCounts


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    v = sorted(values)
    k = max(1, math.ceil(q / 100 * len(v)))
    return v[k - 1]


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _latency(posts: list[PostOutcome]) -> dict[str, Any]:
    lat = [p.published_s - p.queued_s for p in posts if p.published_s is not None]
    return {
        "count": len(lat),
        "p50": _r(percentile(lat, 50)),
        "p90": _r(percentile(lat, 90)),
        "p99": _r(percentile(lat, 99)),
        "max": _r(max(lat) if lat else None),
        "mean": _r(sum(lat) / len(lat) if lat else None),
    }


def build_report(r: RunResult) -> dict[str, Any]:
    """Every figure of a run as plain JSON-able values (deterministic for a virtual run)."""
    posts = list(r.posts)
    received = [p for p in posts if p.received_s is not None]
    payload = sum(p.payload_bytes for p in received)
    wire = r.wire_to_ground_bytes + r.wire_to_station_bytes
    rate = float(r.profile["to_ground_bps"])  # type: ignore[arg-type]
    goodput_bps = payload * 8 / r.up_s if r.up_s else 0.0
    backlog_bps = payload * 8 / r.backlogged_up_s if r.backlogged_up_s else None
    return {
        "mode": r.mode,
        "transfer": r.transfer,
        "profile": r.profile,
        "workload": r.workload,
        "astronauts": r.astronauts,
        "seed": r.seed,
        "duration_s": r.duration_s,
        "posts": {
            "queued": len(posts),
            "with_photos": sum(1 for p in posts if p.photos),
            "received_by_ground": len(received),
            "published": sum(1 for p in posts if p.published_s is not None),
            "still_queued_onboard": sum(1 for p in posts if p.received_s is None),
            "awaiting_publication": sum(
                1 for p in posts if p.received_s is not None and p.published_s is None
            ),
            "refused_onboard": r.refused_onboard,
            "rejected_by_ground": r.rejected,
        },
        "latency_s": {
            "all": _latency(posts),
            "text_only": _latency([p for p in posts if not p.photos]),
            "with_photos": _latency([p for p in posts if p.photos]),
        },
        "bytes": {
            "payload": payload,
            "on_wire": wire,
            "on_wire_to_ground": r.wire_to_ground_bytes,
            "on_wire_to_station": r.wire_to_station_bytes,
            "wire_per_payload": _r(wire / payload if payload else None, 4),
            "resent_by_application": r.app_resent_bytes,
            "retransmitted_by_tcp": r.tcp_retransmitted_bytes,
            "ip_total": r.ip_bytes,
            "ip_per_payload": _r(r.ip_bytes / payload if payload and r.ip_bytes else None, 4),
        },
        "link": {
            "up_s": _r(r.up_s, 1),
            "dark_s": _r(r.duration_s - r.up_s, 1),
            "backlogged_up_s": _r(r.backlogged_up_s, 1),
            "cuts_loss_of_signal": r.cuts_dark,
            "cuts_random": r.cuts_random,
            "http_requests": r.requests,
            "goodput_while_up_bps": _r(goodput_bps, 1),
            "goodput_per_rate_while_up": _r(goodput_bps / rate, 4),
            "goodput_per_rate_while_backlogged": _r(backlog_bps / rate if backlog_bps else None, 4),
            # Transfer bytes stored by ground per backlogged second: counts a backlog not yet cleared.
            "cut_events": r.cut_events,
            "cut_in_network_bytes": r.cut_in_network_bytes,
            "packets_dropped_by_emulator": r.link_drops,
            "busy_connections_mean": _r(r.busy_connections_mean, 2),
            # Each side's TCP senders (the model's, or the kernel's through the packet link).
            "tcp_station": _tcp(r.tcp_station),
            "tcp_ground": _tcp(r.tcp_ground),
            # The costliest cut, and the bytes of all cuts that had crossed but waited in
            # ground's reassembly queue behind a lost segment (lost with the connection).
            "cut_in_network_max_bytes": max((n for n, _ in r.cut_costs), default=0),
            "cut_out_of_order_bytes": sum(o for _, o in r.cut_costs),
            "cuts_with_bytes_in_network": sum(1 for n, _ in r.cut_costs if n),
            "aborted_in_network_bytes": r.aborted_in_network_bytes,
            "transfer_goodput_per_rate_while_backlogged": _r(
                r.transfer_acked_bytes * 8 / r.backlogged_up_s / rate
                if r.transfer_acked_bytes is not None and r.backlogged_up_s
                else None,
                4,
            ),
            "utilisation_to_ground_while_up": _r(
                r.wire_to_ground_bytes * 8 / (r.up_s * rate) if r.up_s else None, 4
            ),
        },
        "traffic_by_kind": r.traffic_by_kind,
        "notes": list(r.notes),
        "timeline": {
            "t_s": [s.t_s for s in r.samples],
            "waiting_onboard": [s.waiting for s in r.samples],
            "awaiting_publication": [s.awaiting_publication for s in r.samples],
            "published": [s.published for s in r.samples],
            "sample_s": r.sample_s,
            "to_ground_bytes": [s.to_ground_bytes for s in r.samples],
            "dark_windows_s": [[_r(a, 1), _r(b, 1)] for a, b in r.dark_windows],
        },
    }


def _fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 120:
        return f"{x:.1f} s"
    if x < 7200:
        return f"{x / 60:.1f} min"
    return f"{x / 3600:.1f} h"


def fmt_duration(seconds: float) -> str:
    """A run's length as a person says it: "30 s", "5 min", "1.5 h", "24 h"."""
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60, 1):g} min"
    return f"{round(seconds / 3600, 2):g} h"


def summary(rep: dict[str, Any]) -> str:
    """A few lines a person reads at the end of a run."""
    p, b, lk, lat = rep["posts"], rep["bytes"], rep["link"], rep["latency_s"]
    prof = rep["profile"]
    # rep["transfer"] is "<driver name>: <description>"; the name alone says how posts moved.
    driver = rep["transfer"].split(":")[0]
    lines = [
        f"{rep['mode']} run: profile {prof['name']}, {rep['astronauts']} astronaut{'' if rep['astronauts'] == 1 else 's'}, "
        f"{fmt_duration(rep['duration_s'])}, workload {rep['workload']['name']}, sent by the {driver} driver",
        f"posts: {p['queued']} queued ({p['with_photos']} with photos), {p['published']} published, "
        f"{p['still_queued_onboard']} still onboard, {p['awaiting_publication']} awaiting publication"
        + (f", {p['refused_onboard']} refused onboard" if p["refused_onboard"] else "")
        + (f", {p['rejected_by_ground']} rejected" if p["rejected_by_ground"] else ""),
        f"latency queued→published: p50 {_fmt_s(lat['all']['p50'])}, p90 {_fmt_s(lat['all']['p90'])}, "
        f"p99 {_fmt_s(lat['all']['p99'])}, max {_fmt_s(lat['all']['max'])} "
        f"(text-only p50 {_fmt_s(lat['text_only']['p50'])}, with photos p50 {_fmt_s(lat['with_photos']['p50'])})",
        f"bytes: payload {b['payload']:,}, on the wire {b['on_wire']:,} "
        f"(×{b['wire_per_payload'] or 0:.3f} payload)"
        + (
            f", resent by the application {b['resent_by_application']:,}"
            if b["resent_by_application"] is not None
            else ""
        )
        + (
            f", TCP retransmitted {b['retransmitted_by_tcp']:,}, IP total ×{b['ip_per_payload'] or 0:.3f}"
            if b["retransmitted_by_tcp"] is not None
            else ""
        ),
        f"link: up {_fmt_s(lk['up_s'])}, dark {_fmt_s(lk['dark_s'])}, cuts {lk['cuts_loss_of_signal']} at loss of "
        f"signal + {lk['cuts_random']} random; goodput/rate {lk['goodput_per_rate_while_up']:.2%} while up, "
        + (
            f"{lk['goodput_per_rate_while_backlogged']:.2%} while posts were waiting"
            if lk["goodput_per_rate_while_backlogged"] is not None
            else "never backlogged"
        ),
    ]
    tr = rep.get("traffic_by_kind")
    if tr:
        parts = [
            f"{k} {v['requests']:,} req {(v['request_bytes'] + v['response_bytes']) / 1e6:.2f} MB"
            for k, v in sorted(tr.items())
        ]
        lines.append("HTTP by request kind (both ways): " + ", ".join(parts))
    return "\n".join(lines + [f"note: {n}" for n in rep["notes"]])


def write_json(rep: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(rep, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def plot(rep: dict[str, Any], path: Path) -> None:
    """Queue depth and link use over time, dark windows shaded, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = rep["timeline"]
    scale, unit = (3600.0, "h") if rep["duration_s"] > 3 * 3600 else (60.0, "min")
    t = [x / scale for x in tl["t_s"]]
    rate = float(rep["profile"]["to_ground_bps"])
    use = [100 * b * 8 / (rate * tl["sample_s"]) for b in tl["to_ground_bytes"]]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True, constrained_layout=True)
    for ax in (ax1, ax2):
        for i, (a, b) in enumerate(tl["dark_windows_s"]):
            ax.axvspan(
                a / scale,
                b / scale,
                color="0.2",
                alpha=0.18,
                lw=0,
                label="loss of signal" if i == 0 else None,
            )
    ax1.step(t, tl["waiting_onboard"], where="post", label="waiting onboard", color="tab:red")
    ax1.step(
        t, tl["awaiting_publication"], where="post", label="on ground, not yet published", color="tab:orange"
    )
    ax1.set_ylabel("posts")
    ax1.legend(loc="upper right", fontsize=8)
    p = rep["posts"]
    lat = rep["latency_s"]["all"]
    ax1.set_title(
        f"{rep['profile']['name']} · {rep['astronauts']} astronauts · {rep['workload']['name']} · {rep['mode']} — "
        f"{p['published']}/{p['queued']} published, p50 {_fmt_s(lat['p50'])}, p90 {_fmt_s(lat['p90'])}",
        fontsize=10,
    )
    ax2.fill_between(
        t,
        use,
        step="pre",
        color="tab:blue",
        alpha=0.6,
        label=f"station → ground, % of rate (per {tl['sample_s']:g} s)",
    )
    ax2.set_ylabel("link use %")
    ax2.set_ylim(0, 105)
    ax2.set_xlabel(f"time ({unit})")
    ax2.legend(loc="upper right", fontsize=8)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def _tcp(c: TcpCounts | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {
        "segments": c.segments,
        "resent_share": _r(c.resent_share, 4),
        "timeouts": c.timeouts,
        "loss_probes": c.loss_probes,
    }
