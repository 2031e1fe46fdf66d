"""Prometheus metrics for ground, computed from the database at scrape time.

Reading the database (rather than counting in memory) keeps it the single source of
truth: numbers survive restarts and include work done by CLI commands beside the server.
Counters are therefore totals over the database's lifetime, which is what Prometheus'
``rate()`` expects.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

# From a sub-second archive write to an hour of retries behind a platform outage.
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class GroundCollector(Collector):
    def __init__(self, conn: sqlite3.Connection, now_ms: int) -> None:
        self.conn = conn
        self.now_ms = now_ms

    def collect(self) -> Iterator[Metric]:
        conn = self.conn
        from .dashboard import actions, queries  # late: the dashboard imports this module

        received = CounterMetricFamily(
            "orbitpost_received_bytes", "Bundle bytes received, by verification outcome.", labels=["outcome"]
        )
        received.add_metric(
            ["accepted"], conn.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM bundles").fetchone()[0]
        )
        received.add_metric(
            ["rejected"], conn.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM rejections").fetchone()[0]
        )
        yield received

        # Everything the live link carried (photos, bundles, protocol frames), per station.
        link_bytes = CounterMetricFamily(
            "orbitpost_link_received_bytes",
            "Request bytes received on the live link, per station.",
            labels=["station"],
        )
        transfers = GaugeMetricFamily(
            "orbitpost_link_transfers",
            "Uploads on the live link by kind and state.",
            labels=["kind", "state"],
        )
        if queries.has_link_tables(conn):
            with contextlib.suppress(sqlite3.OperationalError):  # a link schema this module does not know
                for station, n in conn.execute(
                    "SELECT station, bytes_in FROM link_contacts ORDER BY station"
                ):
                    link_bytes.add_metric([station], n)
                for kind, state, n in conn.execute(
                    "SELECT kind, state, COUNT(*) FROM transfers GROUP BY kind, state ORDER BY kind, state"
                ):
                    transfers.add_metric([kind, state], n)
        yield link_bytes
        yield transfers

        accepted = CounterMetricFamily("orbitpost_bundles_accepted", "Bundles verified and stored.")
        accepted.add_metric([], conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0])
        yield accepted

        rejected = CounterMetricFamily(
            "orbitpost_bundles_rejected", "Bundles rejected, by protocol error code.", labels=["reason"]
        )
        for code, n in conn.execute("SELECT code, COUNT(*) FROM rejections GROUP BY code ORDER BY code"):
            rejected.add_metric([code], n)
        yield rejected

        pubs = GaugeMetricFamily(
            "orbitpost_publications",
            "Publications (post × account) by platform and state.",
            labels=["platform", "state"],
        )
        depth = GaugeMetricFamily(
            "orbitpost_publish_queue_depth",
            "Publications due now or in flight (scheduled ones excluded).",
            labels=["platform"],
        )
        per_platform_depth: dict[str, int] = {}
        counts: dict[tuple[str, str], int] = {}
        # Queue depth counts what is due (or in flight), not posts waiting for their publish time.
        for account, state, n, due in conn.execute(
            "SELECT account, state, COUNT(*), SUM(CASE WHEN state = 'publishing' OR next_attempt_ms IS NULL "
            "OR next_attempt_ms <= ? THEN 1 ELSE 0 END) FROM publications GROUP BY account, state",
            (self.now_ms,),
        ):
            platform = queries.platform_of(account)
            counts[(platform, state)] = counts.get((platform, state), 0) + n
            if state in ("pending", "publishing"):
                per_platform_depth[platform] = per_platform_depth.get(platform, 0) + due
            per_platform_depth.setdefault(platform, 0)
        for (platform, state), n in sorted(counts.items()):
            pubs.add_metric([platform, state], n)
        for platform, n in sorted(per_platform_depth.items()):
            depth.add_metric([platform], n)
        yield pubs
        yield depth

        yield self._latency()

        paused = GaugeMetricFamily(
            "orbitpost_platform_paused", "1 if an operator paused the platform.", labels=["platform"]
        )
        for platform in sorted(actions.paused_platforms(conn)):
            paused.add_metric([platform], 1)
        yield paused

        link = queries.link_status(conn, self.now_ms)
        since = GaugeMetricFamily(
            "orbitpost_seconds_since_last_contact",
            "Seconds since ground last heard from the station (absent if never).",
        )
        if link["seconds_since_contact"] is not None:
            since.add_metric([], link["seconds_since_contact"])
        yield since

    def _latency(self) -> Metric:
        """Received-on-ground → published, per publication, as a cumulative histogram."""
        cases = ", ".join(f"SUM(CASE WHEN lat <= {b * 1000} THEN 1 ELSE 0 END)" for b in LATENCY_BUCKETS_S)
        row = self.conn.execute(
            f"SELECT {cases}, COUNT(*), COALESCE(SUM(lat), 0) FROM ("
            "SELECT p.published_ms - i.received_ms AS lat FROM publications p JOIN items i ON i.id = p.item_id "
            "WHERE p.state = 'published' AND p.published_ms IS NOT NULL)"
        ).fetchone()
        n = row[len(LATENCY_BUCKETS_S)]
        buckets = [(str(b), row[i] or 0) for i, b in enumerate(LATENCY_BUCKETS_S)] + [("+Inf", n)]
        return HistogramMetricFamily(
            "orbitpost_publish_latency_seconds",
            "Time from a bundle's arrival on ground to each of its posts being published.",
            buckets=buckets,
            sum_value=(row[-1] or 0) / 1000,
        )


def render(conn: sqlite3.Connection, now_ms: int) -> tuple[bytes, str]:
    """The exposition-format body and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GroundCollector(conn, now_ms))
    return generate_latest(registry), CONTENT_TYPE_LATEST
