"""Dashboard API cost as the ground database grows.

Fills a ground home with N posts (two accounts each, a realistic mix of states, audit lines
and rejections), serves the dashboard on loopback and times each endpoint the page polls,
plus the per-second change check every open live stream runs. Printed per endpoint: median
and p95 latency, response size, and the ratio to /api/me in the same run (the baseline:
authentication + JSON with no database work).

    python benchmarks/bench_dashboard.py               # N = 1,000 and 20,000 posts (~1 min)
    python benchmarks/bench_dashboard.py --posts 100000
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import TestClient, TestServer  # noqa: E402

from ground import operators  # noqa: E402
from ground.dashboard import queries, setup  # noqa: E402
from ground.db import transaction  # noqa: E402
from ground.home import GroundHome  # noqa: E402
from protocol import Post, encode_item  # noqa: E402
from protocol.ids import new_ulid  # noqa: E402

ENDPOINTS = [
    "/api/me",
    "/api/summary",
    "/api/transfers?limit=30",
    "/api/posts?limit=100",
    "/api/security?limit=50",
    "/api/platforms",
    "/api/astronauts",
    "/api/audit?limit=100",
    "/metrics",
]
ROUNDS = 25


def fill(home: GroundHome, n_posts: int) -> None:
    """N posts by 10 astronauts, 2 accounts each; 85 % published, 5 % failed, 10 % pending/scheduled."""
    conn = home.conn
    now = int(time.time() * 1000)
    base = now - n_posts * 1000
    with transaction(conn):
        for a in range(10):
            conn.execute("INSERT INTO astronauts (name, created_ms) VALUES (?, ?)", (f"astro{a}", base))
            conn.execute(
                "INSERT INTO keys (key_id, astronaut, public_key, enrolled_ms) VALUES (?, ?, ?, ?)",
                (bytes([a]) * 8, f"astro{a}", bytes([a]) * 32, base),
            )
            for acct in (f"archive:astro{a}", f"mastodon:astro{a}"):
                conn.execute("INSERT INTO accounts (astronaut, account) VALUES (?, ?)", (f"astro{a}", acct))
        for b in range(0, n_posts, 10):
            bid = new_ulid(base + b * 1000, b.to_bytes(10, "big"))
            conn.execute(
                "INSERT INTO bundles (bundle_id, sha256, received_ms, source, size_bytes, item_count) "
                "VALUES (?, ?, ?, 'link:iss', 4000, 10)",
                (bid, f"{b:064x}", base + b * 1000),
            )
            for i in range(b, min(b + 10, n_posts)):
                author = f"astro{i % 10}"
                targets = (f"archive:{author}", f"mastodon:{author}")
                ts = base + i * 1000
                post = Post(
                    id=new_ulid(ts, i.to_bytes(10, "big")),
                    author=author,
                    created_ms=ts - 60_000,
                    text=f"Post number {i} from orbit: the view over the Pacific today 🌏",
                    media=(),
                    targets=targets,
                )
                conn.execute(
                    "INSERT INTO items (id, bundle_id, kind, author, key_id, body, signature, created_ms, "
                    "received_ms) VALUES (?, ?, 'post', ?, ?, ?, ?, ?, ?)",
                    (
                        post.id,
                        bid,
                        author,
                        bytes([i % 10]) * 8,
                        encode_item(post),
                        b"\0" * 64,
                        ts - 60_000,
                        ts,
                    ),
                )
                for t in targets:
                    r = i % 20
                    state = "published" if r < 17 else "failed" if r == 17 else "pending"
                    conn.execute(
                        "INSERT INTO publications (item_id, account, state, url, attempts, last_error, "
                        "next_attempt_ms, updated_ms, published_ms) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
                        (
                            post.id,
                            t,
                            state,
                            f"https://example.invalid/{post.id}" if state == "published" else None,
                            "HTTP 500 from the platform" if state == "failed" else None,
                            now + 3_600_000 if r == 19 else None,
                            ts + 2000,
                            ts + 2000 if state == "published" else None,
                        ),
                    )
                    if state != "pending":
                        conn.execute(
                            "INSERT INTO events (ts_ms, actor, kind, detail) VALUES (?, 'publisher', ?, ?)",
                            (ts + 2000, state, f"{post.id} → {t}"),
                        )
            if b % 500 == 0:
                conn.execute(
                    "INSERT INTO rejections (received_ms, source, sha256, size_bytes, code, message) "
                    "VALUES (?, 'link:iss', ?, 999, 'bad_signature', 'signature does not verify')",
                    (base + b * 1000, f"{b:064x}"),
                )
    operators.add_operator(conn, "bench", "benchmark password", operators.Role.READ_ONLY, now)


async def measure(n_posts: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = GroundHome(Path(tmp))
        t0 = time.perf_counter()
        fill(home, n_posts)
        rows = home.conn.execute("SELECT COUNT(*) FROM publications").fetchone()[0]
        print(f"\n{n_posts:,} posts, {rows:,} publications (filled in {time.perf_counter() - t0:.1f} s)")
        app = web.Application()
        setup(app, home)
        async with TestClient(TestServer(app)) as c:
            r = await c.post("/api/login", json={"name": "bench", "password": "benchmark password"})
            assert r.status == 200
            results = {}
            for path in ENDPOINTS:
                times, size = [], 0
                for _ in range(ROUNDS):
                    t = time.perf_counter()
                    r = await c.get(path)
                    body = await r.read()
                    times.append(time.perf_counter() - t)
                    assert r.status == 200, (path, r.status)
                    size = len(body)
                times.sort()
                results[path] = (statistics.median(times), times[int(len(times) * 0.95) - 1], size)
            base = results["/api/me"][0]
            print(f"{'endpoint':28} {'median ms':>10} {'p95 ms':>8} {'bytes':>9} {'× /api/me':>10}")
            for path, (med, p95, size) in results.items():
                print(f"{path:28} {med * 1000:10.1f} {p95 * 1000:8.1f} {size:9,} {med / base:10.1f}")
            page = sum(results[p][0] for p in ENDPOINTS[1:-1])
            print(f"{'one page refresh (7 calls)':28} {page * 1000:10.1f}")
        t = time.perf_counter()
        for _ in range(ROUNDS):
            queries.change_marker(home.conn)
        tick = (time.perf_counter() - t) / ROUNDS
        print(f"{'live-stream change check':28} {tick * 1000:10.2f} ms per stream per second")
        home.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--posts", type=int, nargs="*", default=[1_000, 20_000])
    for n in ap.parse_args().posts:
        asyncio.run(measure(n))


if __name__ == "__main__":
    main()
