"""A scriptable Python peer for the Node interop tests and benchmarks (not part of the API).

    python3 interop_peer.py echo-server [--key K] [--max-buffers N] [--ping S] [--protocol-version V]
                                        [--chunk-bytes C] [--progress]
        prints {"port": N}, echoes every message and answers requests until killed or stdin
        closes; pings every S seconds (default 20); with --progress, prints for each message
        received {"id", "events": progress calls, "monotonic", "complete", "cancelled_by_peer"}
    python3 interop_peer.py v3-client URL [--chunk-bytes C] [--elements N]
        version 3 against an echo server: sends a float32 array of N elements (in chunks of C
        bytes) with progress and checks the echo and its receive progress; then cancels a send of
        64 MiB mid-way and checks that the next message arrives intact; prints one JSON report
    python3 interop_peer.py arrays-client URL --count N [--seed S] [--key K] [--protocol-version V]
        sends N messages of numpy arrays (varied dtypes, shapes, orders, read-only flags) and
        checks each echo; prints {"sent": N, "matched": M, "dtypes": [...], "version": V, "stats": {...}}
        (--any-byte-order: a big-endian array may come back in the machine's byte order)
    python3 interop_peer.py request-client URL --count N [--key K]
        asks N requests ({'op': 'scale', ...}) and checks the answers; then one that fails
    python3 interop_peer.py partial URL
        sends the header and pickle of a message that announces a buffer, prints "partial",
        then waits to be killed
    python3 interop_peer.py send-until-closed URL --bytes N
        sends messages of N bytes in a tight loop until send() fails; prints {"sent": n (the
        sends that returned), "code": the error's code, "message": ..., "failed_at": time.time()
        of the failure, "sndbuf": the socket's SO_SNDBUF}
    python3 interop_peer.py flood-requests URL --count N --bytes B
        sends N requests of B bytes each and never reads a reply; prints {"sent": n} each second
        while it can send, and {"sent": n, "done": true} at the end
    python3 interop_peer.py slow-consumer URL --delay S
        reads one message every S seconds; prints {"received": N, "in_order": bool} at the close
    python3 interop_peer.py send-bench URL / recv-bench URL --mib M --count N [--raw]
        the WebSocket benchmark's Python side (bench/ws.mjs): --count arrays of --mib MiB to or
        from a Node server, with picklewire or (--raw) as plain websockets frames; --no-same-host:
        picklewire's buffers as frames
    python3 interop_peer.py same-host-die URL [--mib M]
        waits until its buffers go through files, sends {'ready': True, 'pid': ...}; on the message
        'go' sends a float32 array of M MiB (through a file) and kills itself with SIGKILL

The echo server answers the message 'same-host-stats' with its same-host counters instead of an
echo (--no-same-host: same_host=False; --same-host-min-bytes N).

Every command exits with status 0 only when everything it checked held.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pickle
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from picklewire import ws as pw  # noqa: E402

DTYPES = ['|u1', '|i1', '<u2', '<i2', '>i2', '<u4', '<i4', '>i4', '<u8', '<i8', '<f2', '<f4', '>f4', '<f8', '>f8',
          '<c8', '<c16', '|b1']


def make_array(i: int, seed: int) -> np.ndarray:
    """Message i's array: its dtype, shape and layout follow from i and the seed alone."""
    rng = np.random.default_rng(seed * 1_000_003 + i)
    dtype = np.dtype(DTYPES[i % len(DTYPES)])
    big = i % 7 == 0  # big enough to travel out of band whatever the dtype
    ndim = int(rng.integers(1, 3)) if big else int(rng.integers(0, 5))
    shape = tuple(int(rng.integers(32, 300)) if big else int(rng.integers(1, 9)) for _ in range(ndim))
    if i % 29 == 3 and ndim > 0:
        shape = (0,) + shape[1:]  # empty
    n = int(np.prod(shape)) if shape else 1
    if dtype.kind == 'b':
        a = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind in 'iu':
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, n, dtype=dtype.newbyteorder('='), endpoint=True)
    elif dtype.kind == 'c':
        a = rng.standard_normal(n) + 1j * rng.standard_normal(n)
    else:
        a = rng.standard_normal(n) * 1000
    a = np.asarray(a).astype(dtype).reshape(shape)
    layout = i % 5
    if layout == 1 and ndim >= 2:
        a = np.asfortranarray(a)
    elif layout == 2 and ndim >= 1 and shape[0] > 1:
        a = a[::2]  # not contiguous: numpy pickles it in band
    elif layout == 3:
        a.flags.writeable = False
    return a


def same_array(a, b, any_byte_order=False) -> bool:
    dtype_ok = a.dtype == b.dtype if not any_byte_order else a.dtype.newbyteorder('<') == b.dtype.newbyteorder('<')
    return isinstance(b, np.ndarray) and dtype_ok and a.shape == b.shape and np.array_equal(a, b)


def out(obj) -> None:
    print(json.dumps(obj), flush=True)


def key_of(args) -> bytes | None:
    return args.key.encode() if args.key else None


def limits_of(args) -> pw.Limits:
    return pw.Limits(max_buffers=args.max_buffers) if getattr(args, 'max_buffers', None) else pw.DEFAULT_LIMITS


def describe(arrays) -> list:
    return [[a.dtype.str, list(a.shape), hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()] for a in arrays]


def answer(value):
    """The echo server's request handler."""
    if isinstance(value, dict) and value.get('op') == 'scale':
        return value['by'] * value['array']
    if isinstance(value, dict) and value.get('op') == 'describe':
        return describe(value['arrays'])
    if isinstance(value, dict) and value.get('op') == 'fail':
        raise ValueError(value.get('why', 'asked to fail'))
    return value


async def echo_server(args) -> None:
    stats = {'connections': 0}

    async def handler(sock: pw.PickleSocket) -> None:
        stats['connections'] += 1
        events: list[dict] = []
        if args.progress:
            sock.on_progress = events.append
        try:
            async for value in sock:
                if isinstance(value, str) and value == 'same-host-stats':
                    await sock.send(same_host_report(sock))
                    continue
                if args.progress:
                    done = [e['bytes'] for e in events]
                    out({'events': len(events), 'monotonic': done == sorted(done),
                         'complete': bool(events) and events[-1]['bytes'] == events[-1]['total'],
                         'ids': sorted({e['id'] for e in events}), 'cancelled_by_peer': sock.stats.messages_cancelled_by_peer})
                    events.clear()
                try:
                    await sock.send(value)
                except pw.TransportError as e:
                    if e.code != 'REMOTE':  # REMOTE: the client refused (discarded) the echo mid-way
                        raise
        except pw.TransportError as e:
            print(f'echo-server: {e.code}: {e}', file=sys.stderr, flush=True)

    async with pw.serve(handler, key=key_of(args), limits=limits_of(args), on_request=answer,
                        chunk_bytes=args.chunk_bytes, protocol_version=args.protocol_version, heartbeat_interval=args.ping, heartbeat_timeout=max(args.ping, 10),
                        same_host=not args.no_same_host, same_host_min_bytes=args.same_host_min_bytes) as server:
        out({'port': server.sockets[0].getsockname()[1]})
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes


def same_host_report(sock: pw.PickleSocket) -> dict:
    """The echo server's answer to the message 'same-host-stats': its same-host counters and state."""
    st = sock.stats
    return {'same_host': sock.same_host, 'pid': os.getpid(), 'buffers_sent': st.buffers_same_host_sent,
            'buffers_received': st.buffers_same_host_received, 'bytes_sent': st.bytes_same_host_sent,
            'bytes_received': st.bytes_same_host_received, 'frames_received': st.frames_received}


async def same_host_die(args) -> None:
    """Connects, waits until its buffers may go through files, says 'ready'; on 'go' sends a
    float32 array of --mib MiB (its buffer through a file) and kills itself with SIGKILL at once."""
    sock = await pw.connect(args.url)
    for _ in range(500):
        if sock.same_host:
            break
        await asyncio.sleep(0.01)
    await sock.send({'ready': sock.same_host, 'pid': os.getpid()})
    assert await sock.recv() == 'go'
    await sock.send(np.arange(args.mib * 2 ** 18, dtype=np.float32))
    out({'sent': sock.stats.buffers_same_host_sent})
    os.kill(os.getpid(), 9)


async def v3_client(args) -> int:
    sock = await pw.connect(args.url, chunk_bytes=args.chunk_bytes, limits=pw.Limits(max_buffer_bytes=2 ** 27, max_message_bytes=2 ** 27))
    received: list[dict] = []
    sock.on_progress = received.append
    a = np.arange(args.elements, dtype=np.float32)
    sent: list[dict] = []
    await sock.send({'a': a}, on_progress=sent.append)
    back = (await sock.recv())['a']
    report: dict = {'version': sock.version, 'matched': bool(np.array_equal(back, a)), 'sent_events': len(sent),
                    'received_events': len(received)}
    for name, events in (('sent', sent), ('received', received)):
        done = [e['bytes'] for e in events]
        report[f'{name}_monotonic'] = done == sorted(done) and events[-1]['bytes'] == events[-1]['total']
    big = np.ones(64 * 2 ** 20, np.uint8)
    halfway = asyncio.Event()

    def on_progress(e):
        if e['buffer'] == 0 and e['buffer_bytes'] >= 4 * 2 ** 20:
            halfway.set()

    task = asyncio.create_task(sock.send(big, on_progress=on_progress))
    await halfway.wait()
    task.cancel()
    try:
        await task
        report['cancelled'] = False
    except asyncio.CancelledError:
        report['cancelled'] = True
    await sock.send('next')
    nxt = await sock.recv()
    report['next'] = nxt if isinstance(nxt, str) else f'{type(nxt).__name__} {getattr(nxt, "nbytes", "")}'
    report['messages_cancelled'] = sock.stats.messages_cancelled
    await sock.close()
    out(report)
    return 0 if report['matched'] and report['cancelled'] and report['next'] == 'next' else 1


async def arrays_client(args) -> int:
    sock = await pw.connect(args.url, key=key_of(args), protocol_version=args.protocol_version)
    sent = [make_array(i, args.seed) for i in range(args.count)]
    # What pickle itself makes of each array (numpy loads a non-contiguous big-endian array in
    # the machine's byte order): the echo must equal that.
    expected = [pickle.loads(pickle.dumps(a, protocol=5)) for a in sent]
    result = {'sent': 0, 'matched': 0, 'mismatches': [], 'dtypes': sorted({a.dtype.str for a in sent})}

    async def send_all():
        for i, a in enumerate(sent):
            value = {'i': i, 'array': a, 'meta': (a.shape, a.dtype.str), 'pair': [a, 'tag' * (i % 3)]} if i % 11 == 0 \
                else {'i': i, 'array': a}
            await sock.send(value)
            result['sent'] += 1

    async def check_all():
        for i in range(args.count):
            v = await sock.recv()
            loose = args.any_byte_order
            ok = isinstance(v, dict) and v.get('i') == i and same_array(expected[i], v.get('array'), loose)
            if ok and i % 11 == 0:
                ok = v['meta'] == (sent[i].shape, sent[i].dtype.str) and same_array(expected[i], v['pair'][0], loose)
            if ok:
                result['matched'] += 1
            elif len(result['mismatches']) < 5:
                got = v.get('array') if isinstance(v, dict) else v
                result['mismatches'].append({'i': i, 'expected': [expected[i].dtype.str, expected[i].shape, repr(sent[i])[:100]],
                                             'got': [str(getattr(got, 'dtype', type(got))), getattr(got, 'shape', None), repr(v)[:100]]})

    await asyncio.gather(send_all(), check_all())
    result['stats'] = vars(sock.stats)
    result['version'] = sock.version
    await sock.close()
    out(result)
    return 0 if result['matched'] == args.count else 1


async def request_client(args) -> int:
    sock = await pw.connect(args.url, key=key_of(args), protocol_version=args.protocol_version)
    good = 0
    for i in range(args.count):
        a = np.arange(i % 50 + 1, dtype=np.float64).reshape(-1, 1)
        got = await sock.request({'op': 'scale', 'by': i, 'array': a})
        good += isinstance(got, np.ndarray) and np.array_equal(got, a * i)
    try:
        await sock.request({'op': 'fail', 'why': 'on purpose'})
        remote = None
    except pw.TransportError as e:
        remote = [e.code, str(e)]
    await sock.close()
    out({'asked': args.count, 'good': good, 'remote_error': remote})
    return 0 if good == args.count else 1


async def partial(args) -> None:
    from websockets.asyncio.client import connect
    ws = await connect(args.url, subprotocols=[pw.SUBPROTOCOL], compression=None)
    data = b'\x80\x05\x95'  # never completed: the header promises a buffer that never comes
    await ws.send(pw.encode_header(id=1, k='msg', p=len(data), b=[4096], ro=[False]))
    await ws.send(data)
    out('partial')
    await asyncio.sleep(60)


async def send_until_closed(args) -> int:
    import socket
    sock = await pw.connect(args.url, heartbeat_interval=None)
    sndbuf = sock.ws.transport.get_extra_info('socket').getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    pad = bytes(args.bytes)
    out({'ready': True})
    sent = 0
    try:
        while True:
            await sock.send((sent, pad))
            sent += 1
    except pw.TransportError as e:
        failed_at = time.time()
        out({'sent': sent, 'counted': sock.stats.messages_sent, 'code': e.code, 'message': str(e),
             'failed_at': failed_at, 'sndbuf': sndbuf})
    return 0


async def flood_requests(args) -> int:
    from websockets.asyncio.client import connect
    # max_queue=1: websockets stops reading the socket at once, so replies back up in TCP
    ws = await connect(args.url, subprotocols=[pw.SUBPROTOCOL], compression=None, max_queue=1, max_size=None)
    sent = 0

    async def report():
        while True:
            await asyncio.sleep(1)
            out({'sent': sent})

    reporter = asyncio.create_task(report())
    data = pickle.dumps(bytes(args.bytes), protocol=5)
    for i in range(args.count):
        await ws.send(pw.encode_header(id=i + 1, k='req', p=len(data), b=[], ro=[]))
        await ws.send(data)
        sent += 1
    reporter.cancel()
    out({'sent': sent, 'done': True})
    await asyncio.sleep(3600)
    return 0


async def slow_consumer(args) -> int:
    sock = await pw.connect(args.url, queue_size=1)
    received, in_order = 0, True
    try:
        async for value in sock:
            in_order = in_order and value['i'] == received
            received += 1
            await asyncio.sleep(args.delay)
    except pw.TransportError as e:
        print(f'slow-consumer: {e.code}: {e}', file=sys.stderr)
        in_order = False
    out({'received': received, 'in_order': in_order})
    return 0 if in_order else 1


# -- benchmark side --------------------------------------------------------------------------
# The Node side times both directions: it says "go" when it is ready to start the clock.

async def send_bench(args) -> None:
    """Sends --count float32 arrays of --mib MiB to the Node server, with picklewire or as raw
    websockets frames of the same bytes, after the server's "go"; waits for its "done"."""
    a = np.ones(args.mib * 2 ** 20 // 4, dtype=np.float32)
    if args.raw:
        from websockets.asyncio.client import connect
        async with connect(args.url, compression=None, max_size=None) as ws:
            await ws.recv()
            for _ in range(args.count):
                await ws.send(memoryview(a).cast('B'))
            await ws.recv()
    else:
        sock = await pw.connect(args.url, same_host=not args.no_same_host)
        await sock.recv()
        for _ in range(args.count):
            await sock.send(a)
        await sock.recv()
        await sock.close()


async def recv_bench(args) -> None:
    """Says "go" to the Node server, receives --count messages of --mib MiB (loaded as numpy
    arrays with picklewire; raw frames with --raw), then says "done"."""
    size = args.mib * 2 ** 20
    if args.raw:
        from websockets.asyncio.client import connect
        async with connect(args.url, compression=None, max_size=None) as ws:
            await ws.send(b'go')
            for _ in range(args.count):
                assert len(await ws.recv()) == size
            await ws.send(b'done')
    else:
        sock = await pw.connect(args.url, same_host=not args.no_same_host)
        await sock.send('go')
        for _ in range(args.count):
            v = await sock.recv()
            assert isinstance(v, np.ndarray) and v.nbytes == size
        await sock.send('done')
        await sock.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('echo-server')
    s.add_argument('--key')
    s.add_argument('--max-buffers', type=int)
    s.add_argument('--ping', type=float, default=20)
    s.add_argument('--protocol-version', type=int, default=pw.LATEST_VERSION)
    s.add_argument('--chunk-bytes', type=int, default=pw.DEFAULT_CHUNK_BYTES)
    s.add_argument('--progress', action='store_true')
    s.add_argument('--no-same-host', action='store_true', help='same_host=False: every buffer as frames')
    s.add_argument('--same-host-min-bytes', type=int, default=pw.DEFAULT_SAME_HOST_MIN_BYTES)
    s = sub.add_parser('same-host-die')
    s.add_argument('url')
    s.add_argument('--mib', type=int, default=64)
    s = sub.add_parser('v3-client')
    s.add_argument('url')
    s.add_argument('--chunk-bytes', type=int, default=pw.DEFAULT_CHUNK_BYTES)
    s.add_argument('--elements', type=int, default=10_000)
    for name in ('arrays-client', 'request-client'):
        s = sub.add_parser(name)
        s.add_argument('url')
        s.add_argument('--count', type=int, default=100)
        s.add_argument('--seed', type=int, default=1)
        s.add_argument('--key')
        s.add_argument('--protocol-version', type=int, default=pw.LATEST_VERSION)
        s.add_argument('--any-byte-order', action='store_true',
                       help='a big-endian array may come back in the machine order (NDArray loads it so)')
    s = sub.add_parser('partial')
    s.add_argument('url')
    s = sub.add_parser('send-until-closed')
    s.add_argument('url')
    s.add_argument('--bytes', type=int, default=1024)
    s = sub.add_parser('flood-requests')
    s.add_argument('url')
    s.add_argument('--count', type=int, default=300)
    s.add_argument('--bytes', type=int, default=2 ** 20)
    s = sub.add_parser('slow-consumer')
    s.add_argument('url')
    s.add_argument('--delay', type=float, default=0.05)
    for name in ('send-bench', 'recv-bench'):
        s = sub.add_parser(name)
        s.add_argument('url')
        s.add_argument('--mib', type=int, default=64)
        s.add_argument('--count', type=int, default=4)
        s.add_argument('--raw', action='store_true')
        s.add_argument('--no-same-host', action='store_true')
    args = p.parse_args()
    run = {
        'echo-server': echo_server, 'arrays-client': arrays_client, 'request-client': request_client,
        'partial': partial, 'slow-consumer': slow_consumer, 'send-until-closed': send_until_closed,
        'flood-requests': flood_requests, 'v3-client': v3_client, 'send-bench': send_bench, 'recv-bench': recv_bench,
        'same-host-die': same_host_die,
    }[args.cmd]
    return asyncio.run(run(args)) or 0


if __name__ == '__main__':
    sys.exit(main())
