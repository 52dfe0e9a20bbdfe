"""The Python side of test/transport/ws-big.test.ts: big arrays between a Node server and this
client, with the real picklewire.ws peer. Not part of the API.

    python3 ws_big_peer.py URL COMMAND [--bytes N] [--count N] [--chunk-bytes C] [--same-host]

Every array is generated here or checked here from a formula of its index: element i of a
uint16 view is i % 65521 (a prime, so a chunk written at the wrong offset shows), so the data
is never held twice. Commands:

    send-big      one float16 array of --bytes bytes to Node, with progress; then prints Node's verdict
    recv-big      one float16 array from Node: checks samples, every chunk boundary, the ends
    send-many     --count float32 arrays of --bytes bytes (array k: element i is k + i % 1009)
    recv-many     --count of those from Node, every element checked, each answered "checked k";
                  the RSS after each
    send-killed   starts a send of --bytes bytes, prints {"sending": n} after its first chunk,
                  and goes on until it is killed
    recv-killed   prints {"receiving": n} after the first chunk Node sends, and waits to be killed
    cancel        cancels its own send of --bytes bytes mid-way, then sends "python next"; then
                  receives from Node (which aborts a send of its own): the first value must be
                  "node next"; answers "python after" to it

Each command connects with limits that admit the sizes and same_host=False (buffers as
frames), or with --same-host same_host=True (buffers through files, when Node proves it runs on
this host); the reports of send-big and recv-big carry the connection's same-host counters
(`same_host`). Each prints one JSON report line last; its status is 0 only when every check held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'packages', 'transport', 'python'))
from picklewire import ws as pw  # noqa: E402

PERIOD = 65521
#: blocks of the generated data: a whole number of periods (about 64 MiB of uint16)
BLOCK = PERIOD * 512
LIMITS = pw.Limits(max_message_bytes=8 * 2 ** 30, max_buffer_bytes=8 * 2 ** 30)


def out(obj) -> None:
    print(json.dumps(obj), flush=True)


def max_rss() -> int:
    """This process's peak resident memory so far, in bytes (what /usr/bin/time -v reports)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def periodic(nbytes: int) -> np.ndarray:
    """A float16 array of nbytes bytes whose uint16 element i is i % PERIOD, made block by block."""
    a = np.empty(nbytes // 2, np.uint16)
    block = (np.arange(BLOCK, dtype=np.int64) % PERIOD).astype(np.uint16)
    for at in range(0, a.size, BLOCK):
        n = min(BLOCK, a.size - at)
        a[at:at + n] = block[:n]
    return a.view(np.float16)


def check_periodic(a, chunk_bytes: int) -> dict:
    """Checks a float16 array against the formula at sampled indices: a stride, both ends, and
    both sides of every chunk boundary."""
    if not isinstance(a, np.ndarray) or a.dtype != np.float16 or a.ndim != 1:
        return {'ok': False, 'why': f'not a 1-d float16 array: {type(a).__name__} {getattr(a, "dtype", "")}'}
    u = a.view(np.uint16)
    n = u.size
    per_chunk = chunk_bytes // 2
    edges = np.arange(per_chunk, n, per_chunk, dtype=np.int64)
    idx = np.unique(np.concatenate([
        np.arange(0, n, 4099, dtype=np.int64), np.arange(min(n, 65536), dtype=np.int64),
        np.arange(max(0, n - 65536), n, dtype=np.int64), edges - 1, edges,
    ]))
    bad = np.flatnonzero(u[idx] != (idx % PERIOD).astype(np.uint16))
    return {'ok': bad.size == 0, 'n': int(n), 'checked': int(idx.size), 'first_bad': int(idx[bad[0]]) if bad.size else None}


def many(k: int, nbytes: int) -> np.ndarray:
    """Array k of send-many / recv-many: element i is k + i % 1009, as float32."""
    n = nbytes // 4
    return np.tile(np.arange(1009, dtype=np.float32) + k, -(-n // 1009))[:n]


def ordered(events: list[dict], total: int) -> bool:
    done = [e['bytes'] for e in events]
    return bool(events) and done == sorted(done) and done[-1] == total and events[-1]['total'] == total


async def connect(url: str, chunk_bytes: int, same_host: bool) -> pw.PickleSocket:
    """A connection to Node; with same_host, once Node accepted this side's proof (10 s at most),
    so that the first buffer already goes through a file."""
    sock = await pw.connect(url, limits=LIMITS, same_host=same_host, chunk_bytes=chunk_bytes)
    for _ in range(1000 if same_host else 0):
        if sock.same_host:
            break
        await asyncio.sleep(0.01)
    return sock


def same_host_stats(sock: pw.PickleSocket) -> dict:
    """The connection's same-host counters: which buffers went through files, and the files made."""
    s = sock.stats
    return {'buffers_sent': s.buffers_same_host_sent, 'bytes_sent': s.bytes_same_host_sent,
            'buffers_received': s.buffers_same_host_received, 'bytes_received': s.bytes_same_host_received,
            'files_made': s.files_same_host_made}


async def send_big(args) -> int:
    t0 = time.monotonic()
    a = periodic(args.bytes)
    made = time.monotonic()
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    events: list[dict] = []
    await sock.send(a, on_progress=events.append)
    sent = time.monotonic()
    verdict = await sock.recv()
    await sock.close()
    report = {'verdict': verdict, 'events': len(events), 'ordered': ordered(events, events[-1]['total'] if events else -1),
              'total': events[-1]['total'] if events else None, 'make_s': round(made - t0, 2),
              'send_s': round(sent - made, 2), 'max_rss': max_rss(), 'same_host': same_host_stats(sock)}
    out(report)
    return 0 if report['ordered'] else 1


async def recv_big(args) -> int:
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    events: list[dict] = []
    sock.on_progress = events.append
    await sock.send('ready')
    t0 = time.monotonic()
    a = await sock.recv()
    got = time.monotonic()
    check = check_periodic(a, args.chunk_bytes)
    report = {'check': check, 'events': len(events), 'ordered': ordered(events, events[-1]['total'] if events else -1),
              'recv_s': round(got - t0, 2), 'nbytes': int(a.nbytes), 'max_rss': max_rss(),
              'same_host': same_host_stats(sock)}
    del a
    await sock.send(report)
    await sock.close()
    out(report)
    return 0 if check['ok'] and report['ordered'] else 1


async def send_many(args) -> int:
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    after: list[int] = []
    for k in range(args.count):
        a = many(k, args.bytes)
        await sock.send(a)
        del a
        after.append(rss())
    verdict = await sock.recv()
    await sock.close()
    out({'verdict': verdict, 'rss_after': after, 'max_rss': max_rss()})
    return 0


async def recv_many(args) -> int:
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    await sock.send('ready')
    matched = 0
    after: list[int] = []
    for k in range(args.count):
        a = await sock.recv()
        if isinstance(a, np.ndarray) and a.dtype == np.float32 and a.nbytes == args.bytes and np.array_equal(a, many(k, args.bytes)):
            matched += 1
        del a
        after.append(rss())
        await sock.send(f'checked {k}')
    report = {'matched': matched, 'rss_after': after, 'max_rss': max_rss()}
    await sock.send(report)
    await sock.close()
    out(report)
    return 0 if matched == args.count else 1


def tell_first_chunk(key: str):
    """A progress callback that prints {key: bytes of buffer 0 done} once, at the first chunk of buffer 0."""
    told = False

    def on_progress(e):
        nonlocal told
        if e['buffer'] == 0 and not told:
            told = True
            out({key: e['buffer_bytes']})
    return on_progress


async def send_killed(args) -> int:
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    await sock.send(np.ones(args.bytes, np.uint8), on_progress=tell_first_chunk('sending'))
    out({'sent': 'whole'})  # the kill should come first
    await asyncio.sleep(60)
    return 1


async def recv_killed(args) -> int:
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    sock.on_progress = tell_first_chunk('receiving')
    await sock.send('ready')
    v = await sock.recv()
    out({'received': type(v).__name__})  # the kill should come first
    await asyncio.sleep(60)
    return 1


async def cancel(args) -> int:
    sock = await connect(args.url, args.chunk_bytes, args.same_host)
    halfway = asyncio.Event()

    def on_progress(e):
        if e['buffer'] == 0 and e['buffer_bytes'] >= args.bytes // 4:
            halfway.set()

    task = asyncio.create_task(sock.send(np.ones(args.bytes, np.uint8), on_progress=on_progress))
    await halfway.wait()
    task.cancel()
    try:
        await task
        cancelled = False
    except asyncio.CancelledError:
        cancelled = True
    await sock.send('python next')
    first = await sock.recv()  # Node aborted a send of its own before this one
    await sock.send('python after')
    report = {'cancelled': cancelled, 'first': first if isinstance(first, str) else type(first).__name__,
              'messages_cancelled': sock.stats.messages_cancelled, 'cancelled_by_peer': sock.stats.messages_cancelled_by_peer,
              'received': sock.stats.messages_received}
    await sock.recv()  # Node's last word: the connection served both ways
    await sock.close()
    out(report)
    return 0 if cancelled and first == 'node next' else 1


COMMANDS = {'send-big': send_big, 'recv-big': recv_big, 'send-many': send_many, 'recv-many': recv_many,
            'send-killed': send_killed, 'recv-killed': recv_killed, 'cancel': cancel}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('url')
    p.add_argument('command', choices=sorted(COMMANDS))
    p.add_argument('--bytes', type=int, default=2 ** 20)
    p.add_argument('--count', type=int, default=1)
    p.add_argument('--chunk-bytes', type=int, default=pw.DEFAULT_CHUNK_BYTES)
    p.add_argument('--same-host', action='store_true', help="connect with same_host=True (buffers through files)")
    args = p.parse_args()
    return asyncio.run(COMMANDS[args.command](args))


if __name__ == '__main__':
    sys.exit(main())
