"""bench_link.py's baseline as two processes, for runs through linkemu's packet link: one HTTP
POST per post, JSON with the photos base64-encoded, posts sent one after another on one
connection and each retried whole after a failure (what a naive client does).

    python benchmarks/baseline_post.py serve --host ADDR --port P --counts FILE   # in ground's namespace
    python benchmarks/baseline_post.py send --url URL --seed S --minutes M          # in the station's

``serve`` writes FILE (JSON) when it gets SIGTERM: the payload bytes of the posts received
whole, and of the bodies still arriving the share of their payload read so far (the client
says each body's payload bytes in ``X-Payload-Bytes``), so a run cut off mid-post counts what
crossed, as the transfer's stored ranges do.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RETRIES = 1000  # per post; bounded, and the run is stopped long before


class _Counts:
    def __init__(self) -> None:
        self.done_payload = 0
        self.done_posts = 0
        self.reading: dict[int, tuple[int, int, int]] = {}  # request -> (read, body length, payload)

    def as_json(self) -> dict[str, float]:
        partial = sum(read * payload / max(length, 1) for read, length, payload in self.reading.values())
        return {"payload_done": self.done_payload, "posts_done": self.done_posts, "payload_partial": partial}


async def serve(host: str, port: int, counts_file: Path) -> None:
    """Accept posts until SIGTERM, then write the counts."""
    counts = _Counts()

    async def accept(request: web.Request) -> web.Response:
        key = id(request)
        length = request.content_length or 0
        payload = int(request.headers.get("X-Payload-Bytes", "0"))
        body = bytearray()
        try:
            async for data in request.content.iter_any():
                body += data
                counts.reading[key] = (len(body), length, payload)
        except (ConnectionError, aiohttp.ClientPayloadError):
            return web.json_response({"ok": False}, status=400)  # cut mid-body: retried whole
        finally:
            counts.reading.pop(key, None)
        doc = json.loads(body)
        counts.done_payload += len(doc["text"].encode()) + sum(
            len(base64.b64decode(p["data"])) for p in doc["photos"]
        )
        counts.done_posts += 1
        return web.json_response({"ok": True})

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/post", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    tmp = counts_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts.as_json()))
    tmp.replace(counts_file)  # whole or absent: the benchmark waits for it, then stops us


async def send(url: str, workload: str, astronauts: int, minutes: float, seed: int) -> None:
    """POST the run's planned posts (simlink's plan for this seed) one by one, each until it lands."""
    from simlink.workload import load_workload, plan_posts

    plan = plan_posts(load_workload(workload), astronauts, minutes * 60, seed)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for i, post in enumerate(plan):
            body = json.dumps(
                {
                    "id": str(i),
                    "author": post.author,
                    "text": post.text,
                    "targets": list(post.targets),
                    "photos": [
                        {"alt": ph.alt, "data": base64.b64encode(ph.data).decode()} for ph in post.photos
                    ],
                }
            ).encode()
            headers = {"Content-Type": "application/json", "X-Payload-Bytes": str(post.payload_bytes)}
            for _attempt in range(RETRIES):
                try:
                    async with session.post(url, data=body, headers=headers) as r:
                        if r.status == 200:
                            break
                except (aiohttp.ClientError, OSError, TimeoutError):
                    await asyncio.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--counts", type=Path, required=True)
    c = sub.add_parser("send")
    c.add_argument("--url", required=True)
    c.add_argument("--workload", default="photo-backlog")
    c.add_argument("--astronauts", type=int, default=4)
    c.add_argument("--minutes", type=float, required=True)
    c.add_argument("--seed", type=int, required=True)
    args = ap.parse_args()
    if args.cmd == "serve":
        asyncio.run(serve(args.host, args.port, args.counts))
    else:
        asyncio.run(send(args.url, args.workload, args.astronauts, args.minutes, args.seed))


if __name__ == "__main__":
    main()
