"""What bare kernel TCP gets through the packet emulator: n bulk connections for a while.

A baseline for issue 14: the goodput of the station kernel's own TCP (CUBIC, SACK, RACK) at a
given rate, delay and random loss, next to the Mathis bound and the physical ceiling, with no
application protocol on top. ``python -m linkemu.packet_bulk --rate-kbps 1500 --down-rate-kbps 500
--delay-ms 700 --loss-percent 1 --streams 4 --seconds 60`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys

from .errors import PacketLinkError
from .packet import PacketLink, WayConfig

# Ground: accept connections; count the bytes read in `seconds` after `warmup` s from the first, and in
# all. Bytes are read when TCP makes them readable: a retransmission that fills a hole releases
# up to a window of bytes that crossed earlier, so a window's count is right to about ±1 BDP.
SINK = r"""
import selectors, socket, sys, time
sel = selectors.DefaultSelector(); s = socket.socket()
s.bind((sys.argv[1], 9000)); s.listen(256); s.setblocking(False); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
t0 = None; n = total = 0; seconds, warmup = float(sys.argv[2]), float(sys.argv[3])
while t0 is None or time.monotonic() < t0 + warmup + seconds:
    for key, _ in sel.select(0.2):
        if key.fileobj is s:
            c, _ = s.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            t0 = t0 or time.monotonic()
        elif d := key.fileobj.recv(65536):
            n += len(d) if time.monotonic() >= t0 + warmup else 0; total += len(d)
        else:
            sel.unregister(key.fileobj); key.fileobj.close()
print(n, total, flush=True)
"""
# Station: `streams` connections with congestion control `cc`, each sending as fast as TCP lets it.
SOURCE = r"""
import os, socket, sys, threading, time
addr, seconds, streams, cc = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
end = time.monotonic() + seconds + 1; chunk = b"x" * 65536
def send():
    s = socket.socket(); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc)
    s.settimeout(30); s.connect((addr, 9000)); s.settimeout(1)
    while time.monotonic() < end:
        try:
            s.send(chunk)
        except TimeoutError:
            pass
        except OSError:
            return  # the sink has stopped counting
for _ in range(streams):
    threading.Thread(target=send, daemon=True).start()
time.sleep(seconds + 1.5); os._exit(0)
"""
MSS_BYTES = 1448  # 1500 − 20 IP − 20 TCP − 12 timestamps option


async def measure(args: argparse.Namespace) -> dict[str, object]:
    """Run the bulk transfer once; the figures as a dict."""
    up_bps = args.rate_kbps * 1000
    down_bps = (args.down_rate_kbps or args.rate_kbps) * 1000
    delay_s, loss = args.delay_ms / 1000, args.loss_percent / 100
    up = WayConfig(rate_bps=up_bps, delay_s=delay_s, loss=loss)
    down = WayConfig(rate_bps=down_bps, delay_s=delay_s, loss=loss)
    cc = args.congestion_control
    async with PacketLink(
        up=up, down=down, seed=args.seed, prefix=args.prefix, congestion_control=cc
    ) as link:

        async def run(ns: str, program: str, *argv: object) -> asyncio.subprocess.Process:
            return await asyncio.create_subprocess_exec(
                *link.netns_argv(ns), sys.executable, "-c", program, *map(str, argv),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip

        sink = await run(link.ground_ns, SINK, link.ground_addr, args.seconds, args.warmup_s)
        assert sink.stdout is not None
        if await sink.stdout.readline() != b"ready\n":
            raise PacketLinkError("the ground's sink did not start")
        seconds = args.warmup_s + args.seconds
        source = await run(link.station_ns, SOURCE, link.ground_addr, seconds, args.streams, cc)
        wait_s = args.warmup_s + args.seconds + 60
        received, total = map(int, (await asyncio.wait_for(sink.stdout.readline(), wait_s)).split())
        await source.wait()
        await sink.wait()
        counters = await asyncio.create_subprocess_exec(
            *link.netns_argv(link.station_ns), "cat", "/proc/net/snmp", "/proc/net/netstat",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        station_tcp, _ = await counters.communicate()
        s = link.stats
    goodput_bps = received * 8 / args.seconds
    rtt_s = 2 * delay_s
    mathis_bps = math.inf if loss == 0 else args.streams * MSS_BYTES * 8 / rtt_s * 1.22 / math.sqrt(loss)
    ceiling_bps = up_bps * (1 - loss) * MSS_BYTES / 1500
    return {
        "rate_kbit_s": args.rate_kbps,
        "rtt_s": rtt_s,
        "loss_percent": args.loss_percent,
        "streams": args.streams,
        "seconds": args.seconds,
        "warmup_s": args.warmup_s,
        "congestion_control": args.congestion_control,
        "seed": args.seed,
        "received_bytes": received,
        "goodput_over_rate": round(goodput_bps / up_bps, 3),
        "with_warmup_over_rate": round(total * 8 / (args.seconds + args.warmup_s) / up_bps, 3),
        "mathis_over_rate": None if math.isinf(mathis_bps) else round(min(mathis_bps, up_bps) / up_bps, 3),
        "ceiling_over_rate": round(ceiling_bps / up_bps, 3),
        "lost_up": s.up.loss_packets,
        "queue_full_up": s.up.queue_full_packets,
        "sent_up": s.up.sent_packets,
        # The station namespace's TCP counters (/proc/net/snmp and netstat, as the kernel
        # prints them): its retransmissions, timeouts and loss probes.
        "station_tcp": station_tcp.decode(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m linkemu.packet_bulk", description=__doc__.splitlines()[0])
    p.add_argument("--rate-kbps", type=float, required=True, help="station → ground")
    p.add_argument("--down-rate-kbps", type=float, default=0, help="ground → station (default: same)")
    p.add_argument("--delay-ms", type=float, default=0, help="one-way delay")
    p.add_argument("--loss-percent", type=float, default=0, help="chance each packet is lost, each way")
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--warmup-s", type=float, default=0, help="not counted: slow start, the first losses")
    p.add_argument("--congestion-control", default="cubic", help="the station's sockets': cubic, reno, bbr …")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="pktbulk", help="namespace name prefix")
    args = p.parse_args(argv)
    if args.streams < 1 or args.seconds <= 0 or args.warmup_s < 0:
        p.error("--streams must be ≥ 1, --seconds > 0 and --warmup-s ≥ 0")
    try:
        figures = asyncio.run(measure(args))
        del figures["station_tcp"]
        print(json.dumps(figures))
    except PacketLinkError as exc:
        print(f"linkemu.packet_bulk: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
