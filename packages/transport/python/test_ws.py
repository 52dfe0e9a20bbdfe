"""Tests of the Python peer, Python to Python over a real loopback WebSocket.

    cd packages/transport/python && python3 -m unittest -v test_ws

(test/transport/ws-python-unittest.test.ts runs this, so CI does.) The Node side is tested
against this module in test/transport/ws-python.test.ts.
"""

from __future__ import annotations

import asyncio
import fractions
import gc
import json
import mmap
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import unittest

import msgpack
import numpy as np
from websockets.asyncio.client import connect as raw_connect

from picklewire import ws as pw

TIMEOUT = 20
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_WS = os.path.join(HERE, '..', 'dist', 'ws', 'index.js')


class Runs:
    """A value whose pickle makes the loader call func(*args) (os.system, say): what a hostile peer sends."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class DTypeWithState:
    """Pickles as numpy.dtype(typestr, False, True) then BUILD with any state, as numpy's own
    dtype pickles do, but with a state numpy never writes."""

    def __init__(self, typestr, state):
        self.typestr, self.state = typestr, state

    def __reduce__(self):
        return np.dtype, (self.typestr, False, True), self.state


class Point:
    """A class of the application's, for allow=."""

    def __init__(self, x):
        self.x = x


#: numpy.dtype('M8') given a version 3 state (no datetime unit): numpy 2.x's __setstate__ crashes CPython on it.
CRASHING_DTYPE = DTypeWithState('M8', (3, '<', None, None, None, -1, -1, 0))


class Peer:
    """A server whose handler records what it received and echoes it, with a client connected."""

    def __init__(self, **options):
        self.options = options
        self.received = []
        self.server_errors = []
        self.server_socks = []

    async def __aenter__(self):
        async def handler(sock):
            self.server_socks.append(sock)
            try:
                async for value in sock:
                    self.received.append(value)
                    await sock.send(value)
            except pw.TransportError as e:
                self.server_errors.append(e)

        server_options = {k: v for k, v in self.options.items() if k != 'client'}
        self.server = await pw.serve(handler, **server_options).__aenter__()
        self.port = self.server.sockets[0].getsockname()[1]
        self.url = f'ws://127.0.0.1:{self.port}/'
        return self

    async def client(self, **options):
        return await pw.connect(self.url, **options)

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


class Decoder:
    """What PickleSocket._decode reads of its socket: a connection loading with the default unpickler."""
    writable = False
    unpickler = None
    allow: frozenset[str] = frozenset()
    stats = pw.Stats()


class Message:
    """A received message as PickleSocket._decode takes it: its pickle and buffers."""
    def __init__(self, pickle: bytes, buffers: list):
        self.pickle, self.buffers, self.header = pickle, buffers, {'ro': [True] * len(buffers)}


class WireTests(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.timeout = asyncio.timeout(TIMEOUT)
        await self.timeout.__aenter__()

    async def asyncTearDown(self):
        await self.timeout.__aexit__(None, None, None)

    async def test_numpy_arrays_round_trip_out_of_band(self):
        arrays = [np.arange(4096, dtype=dt).reshape(64, -1) for dt in ('<f4', '<f8', '<i2', '>i4', '<u8', '<c16')]
        arrays.append(np.asfortranarray(np.arange(2048, dtype='<f8').reshape(32, 64)))
        arrays.append(np.zeros((0, 3), np.float32))
        arrays.append(np.arange(10, dtype=np.int64)[::2])  # not contiguous: in band
        async with Peer() as peer:
            sock = await peer.client()
            for a in arrays:
                await sock.send({'a': a, 'shape': a.shape})
            for a in arrays:
                back = await sock.recv()
                self.assertEqual(back['a'].dtype, a.dtype)
                self.assertEqual(back['shape'], a.shape)
                np.testing.assert_array_equal(back['a'], a)
            self.assertEqual(sock.stats.bytes_copied, 0)
            await sock.close()

    async def test_buffers_leave_as_memoryviews_of_the_array(self):
        a = np.arange(1024, dtype=np.float64)
        parts = pw.encode_value({'a': a})
        self.assertEqual(len(parts.buffers), 1)
        self.assertIsInstance(parts.buffers[0], memoryview)
        self.assertEqual(np.frombuffer(parts.buffers[0], np.float64).ctypes.data, a.ctypes.data, 'no copy')
        self.assertEqual(parts.align, [8])
        self.assertEqual(parts.readonly, [False])
        small = pw.encode_value(np.arange(4, dtype=np.float64))
        self.assertEqual(small.buffers, [], 'small buffers travel in band')

    async def test_the_spec_test_vector(self):
        frames = [bytes.fromhex(h) for h in (
            '87a17601a2696401a16ba36d7367a17014a1629110a2726f91c2a17882a2616c9108a461757468ab686d61632d736861323536',
            '80059509000000000000007d948c01789497732e',
            '000102030405060708090a0b0c0d0e0f',
            'e080ed1e2886ec9b49c6553b0a73555d795d4dbe925af9dfb0d93b1192016f9b',
        )]
        receiver = pw._Receiver(pw.DEFAULT_LIMITS, b'picklewire test key', 'client')
        self.assertEqual([receiver.push(f) for f in frames[:3]], [None] * 3)
        m = receiver.push(frames[3])
        self.assertEqual(m.header['x'], {'al': [8], 'auth': 'hmac-sha256'})
        value = pickle.loads(m.pickle, buffers=m.buffers)
        self.assertEqual(bytes(value['x']), bytes(range(16)))
        receiver = pw._Receiver(pw.DEFAULT_LIMITS, b'another key', 'client')
        for f in frames[:3]:
            receiver.push(f)
        with self.assertRaises(pw.TransportError) as e:
            receiver.push(frames[3])
        self.assertEqual(e.exception.code, 'AUTH')

    async def test_version_2_is_negotiated_and_a_small_message_is_one_frame(self):
        async with Peer() as peer:
            sock = await peer.client(protocol_version=2)
            self.assertEqual(sock.version, 2)
            self.assertEqual(sock.ws.subprotocol, 'picklewire.v2')
            for i in range(50):
                await sock.send({'seq': i, 'payload': bytes(960)})
            for i in range(50):
                self.assertEqual((await sock.recv())['seq'], i)
            self.assertEqual(sock.stats.frames_sent, 50)
            self.assertEqual(sock.stats.frames_received, 50)
            self.assertEqual(peer.server_socks[0].version, 2)
            self.assertEqual(peer.server_socks[0].stats.frames_received, 50)
            # buffers still travel as frames of their own; a big pickle gets its own frame
            a = np.arange(4096, dtype=np.float64)
            await sock.send({'a': a})
            np.testing.assert_array_equal((await sock.recv())['a'], a)
            self.assertEqual(sock.stats.frames_sent, 52, 'header (pickle inline) and one buffer frame')
            big = 'x' * (pw.MAX_INLINE_PICKLE_BYTES + 10)
            await sock.send(big)
            self.assertEqual(await sock.recv(), big)
            self.assertEqual(sock.stats.frames_sent, 54, 'header and pickle frame')
            await sock.close()

    async def test_version_2_with_a_key_is_header_and_mac(self):
        async with Peer(key='k') as peer:
            sock = await peer.client(key='k')
            await sock.send({'seq': 1})
            self.assertEqual(await sock.recv(), {'seq': 1})
            self.assertEqual(sock.stats.frames_sent, 2)
            self.assertEqual(sock.stats.frames_received, 2)
            await sock.close()

    async def test_version_1_when_either_side_asks(self):
        async with Peer() as peer:
            sock = await peer.client(protocol_version=1)
            self.assertEqual(sock.version, 1)
            await sock.send([1, 2])
            self.assertEqual(await sock.recv(), [1, 2])
            self.assertEqual(sock.stats.frames_sent, 2)
            self.assertEqual(sock.stats.frames_received, 2)
            await sock.close()
        async with Peer(protocol_version=1) as peer:
            sock = await peer.client()
            self.assertEqual(sock.version, 1)
            await sock.send('x')
            self.assertEqual(await sock.recv(), 'x')
            self.assertEqual(sock.stats.frames_received, 2)
            await sock.close()
        with self.assertRaises(ValueError):
            await pw.connect('ws://127.0.0.1:1/', protocol_version=4)

    async def test_the_spec_test_vector_version_2(self):
        frames = [bytes.fromhex(h) for h in (
            '88a17602a2696401a16ba36d7367a17014a1629110a2726f91c2a17882a2616c9108a461757468ab686d61632d736861323536'
            'a2706bc41480059509000000000000007d948c01789497732e',
            '000102030405060708090a0b0c0d0e0f',
            '2d16a90eb0470fc6efa4075158381e7f1d2ebe5a28f1af6ce8c35d19d6900bd6',
        )]
        pk = bytes.fromhex('80059509000000000000007d948c01789497732e')
        self.assertEqual(pw.encode_header(v=2, id=1, k='msg', p=20, b=[16], ro=[False],
                                          x={'al': [8], 'auth': 'hmac-sha256'}, pk=pk), frames[0])
        receiver = pw._Receiver(pw.DEFAULT_LIMITS, b'picklewire test key', 'client', 2)
        self.assertEqual([receiver.push(f) for f in frames[:2]], [None] * 2)
        m = receiver.push(frames[2])
        self.assertEqual(bytes(pickle.loads(m.pickle, buffers=m.buffers)['x']), bytes(range(16)))
        tampered = bytearray(frames[0])
        tampered[-3] ^= 1  # a byte of the inline pickle
        receiver = pw._Receiver(pw.DEFAULT_LIMITS, b'picklewire test key', 'client', 2)
        receiver.push(bytes(tampered))
        receiver.push(frames[1])
        with self.assertRaises(pw.TransportError) as e:
            receiver.push(frames[2])
        self.assertEqual(e.exception.code, 'AUTH')

    def test_inline_header_checks(self):
        good = pickle.dumps('ok', protocol=5)
        receiver = pw._Receiver(pw.DEFAULT_LIMITS, None, 'client', 2)
        m = receiver.push(pw.encode_header(v=2, id=1, k='msg', p=len(good), b=[], ro=[], pk=good))
        self.assertEqual(pickle.loads(m.pickle), 'ok', 'one frame, one message')
        self.assertEqual(receiver.progress(), 'between messages')
        cases = {
            'pk on version 1': (1, pw.encode_header(v=1, id=1, k='msg', p=len(good), b=[], ro=[], pk=good), 'PROTOCOL', 'needs protocol version 2'),
            'pk shorter than p': (2, pw.encode_header(v=2, id=1, k='msg', p=len(good) + 1, b=[], ro=[], pk=good), 'PROTOCOL', 'p announces'),
            'pk a str': (2, msgpack.packb({'v': 2, 'id': 1, 'k': 'msg', 'p': 2, 'pk': 'ok'}), 'PROTOCOL', 'must be binary'),
            'pk nil': (2, msgpack.packb({'v': 2, 'id': 1, 'k': 'msg', 'p': 2, 'pk': None}), 'PROTOCOL', 'must be binary'),
            'version 1 header on version 2': (2, pw.encode_header(v=1, id=1, k='msg', p=len(good), b=[], ro=[]), 'PROTOCOL', 'this connection speaks 2'),
            'over max_pickle_bytes': (2, pw.encode_header(v=2, id=1, k='msg', p=len(good), b=[], ro=[], pk=good), 'LIMIT', 'max_pickle_bytes'),
            'cut inside pk': (2, pw.encode_header(v=2, id=1, k='msg', p=len(good), b=[], ro=[], pk=good)[:-3], 'PROTOCOL', 'not msgpack'),
            'header over 64 KiB': (2, pw.encode_header(v=2, id=1, k='msg', p=70000, b=[], ro=[], pk=bytes(70000)), 'LIMIT', 'over the header limit of 65536 bytes'),
        }
        for name, (version, frame, code, text) in cases.items():
            with self.subTest(name):
                limits = pw.Limits(max_pickle_bytes=4) if name == 'over max_pickle_bytes' else pw.DEFAULT_LIMITS
                receiver = pw._Receiver(limits, None, 'client', version)
                with self.assertRaises(pw.TransportError) as e:
                    receiver.push(frame)
                self.assertEqual(e.exception.code, code)
                self.assertIn(text, str(e.exception))
                self.assertEqual(e.exception.close_code() == pw.CLOSE.VERSION, name == 'version 1 header on version 2')

    async def test_received_values_are_read_only_unless_writable_is_asked(self):
        async with Peer() as peer:
            sock = await peer.client()
            await sock.send(np.arange(1024, dtype=np.int32))
            self.assertFalse((await sock.recv()).flags.writeable)
            await sock.close()
        async with Peer(writable=True) as peer:
            sock = await peer.client(writable=True)
            await sock.send(np.arange(1024, dtype=np.int32))
            back = await sock.recv()
            self.assertTrue(back.flags.writeable)
            self.assertEqual(sock.stats.bytes_copied, 4096)
            await sock.close()

    async def test_header_extras_reach_the_receiver(self):
        received = []

        async def handler(s):
            received.append(await s.recv_message())

        async with pw.serve(handler) as server:
            sock = await pw.connect(f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/')
            await sock.send(np.arange(512, dtype=np.float64), x={'trace': 'abc'})
            await sock.closed
        value, info = received[0]
        np.testing.assert_array_equal(value, np.arange(512, dtype=np.float64))
        self.assertEqual(info, {'id': 1, 'x': {'trace': 'abc'}})

    async def test_order_is_kept(self):
        async with Peer() as peer:
            sock = await peer.client()

            async def send():
                for i in range(300):
                    await sock.send({'i': i, 'a': np.full(i * 10, i, np.int16)})

            sender = asyncio.create_task(send())
            got = [await sock.recv() for _ in range(300)]
            await sender
            self.assertEqual([v['i'] for v in got], list(range(300)))
            self.assertTrue(all((v['a'] == v['i']).all() for v in got))
            await sock.close()

    async def test_request_reply_and_remote_errors(self):
        def on_request(value):
            if value == 'boom':
                raise ValueError('no boom here')
            return value['a'].sum()

        async with Peer(on_request=on_request) as peer:
            sock = await peer.client()
            answers = await asyncio.gather(*(sock.request({'a': np.full(2000, i, np.int64)}) for i in range(20)))
            self.assertEqual(answers, [2000 * i for i in range(20)])
            with self.assertRaises(pw.TransportError) as e:
                await sock.request('boom')
            self.assertEqual(e.exception.code, 'REMOTE')
            self.assertIn('ValueError: no boom here', str(e.exception))
            await sock.close()

    async def test_async_request_handler_and_no_handler(self):
        async def on_request(value):
            await asyncio.sleep(0.01)
            return value * 2

        async with Peer(on_request=on_request) as peer:
            sock = await peer.client()
            self.assertEqual(await sock.request(21), 42)
            await sock.close()
        async with Peer() as peer:
            sock = await peer.client()
            with self.assertRaises(pw.TransportError) as e:
                await sock.request(1)
            self.assertEqual(e.exception.code, 'REMOTE')
            self.assertIn('no request handler', str(e.exception))
            await sock.close()

    async def test_hmac_authenticates_every_message(self):
        async with Peer(key=b'secret') as peer:
            sock = await peer.client(key=b'secret')
            await sock.send(np.arange(2048, dtype=np.float32))
            np.testing.assert_array_equal(await sock.recv(), np.arange(2048, dtype=np.float32))
            await sock.close()

            sock = await peer.client(key=b'another key')
            await sock.send('forged')
            with self.assertRaises(pw.TransportError) as e:
                await sock.recv()
            self.assertEqual(e.exception.code, 'AUTH')
            self.assertIn('4401', str(e.exception))
            await asyncio.sleep(0.05)
            self.assertEqual(peer.server_errors[-1].code, 'AUTH')
            self.assertEqual(len(peer.received), 1, 'nothing of a failing message is delivered')

    async def test_unauthenticated_message_to_a_keyed_side_is_refused(self):
        async with Peer(key=b'secret') as peer:
            sock = await peer.client()
            await sock.send('no mac')
            with self.assertRaises(pw.TransportError) as e:
                await sock.recv()
            self.assertEqual(e.exception.code, 'AUTH')
            self.assertEqual(peer.received, [])

    async def test_limits_are_checked_from_the_header(self):
        async with Peer(limits=pw.Limits(max_buffers=2, max_buffer_bytes=8192)) as peer:
            sock = await peer.client()
            await sock.send([np.zeros(1024, np.uint8)] * 2)  # two buffers of 1 KiB: fine
            await sock.recv()
            await sock.send([np.zeros(1024, np.uint8) for _ in range(3)])
            with self.assertRaises(pw.TransportError) as e:
                await sock.recv()
            self.assertEqual(e.exception.code, 'LIMIT')
            self.assertIn('4413', str(e.exception))
            self.assertEqual(len(peer.received), 1)

    async def test_raw_frames_that_break_the_protocol(self):
        good = pickle.dumps('ok', protocol=5)
        cases = {
            'version': ([pw.encode_header(v=2, id=1, k='msg', p=len(good), b=[], ro=[]), good], 4426),
            'text frame': (['hello'], 4400),
            'not msgpack': ([b'\xc1'], 4400),
            'truncated pickle': ([pw.encode_header(id=1, k='msg', p=len(good) + 1, b=[], ro=[]), good], 4400),
            'id out of sequence': ([pw.encode_header(id=2, k='msg', p=len(good), b=[], ro=[]), good], 4400),
            'unknown kind': ([pw.encode_header(id=1, k='nope', p=len(good), b=[], ro=[]), good], 4400),
            'reply without re': ([pw.encode_header(id=1, k='rep', p=len(good), b=[], ro=[]), good], 4400),
            'over the limit': ([pw.encode_header(id=1, k='msg', p=len(good), b=[2 ** 31], ro=[False])], 4413),
        }
        for name, (frames, code) in cases.items():
            with self.subTest(name):
                async with Peer() as peer:
                    ws = await raw_connect(peer.url, subprotocols=[pw.SUBPROTOCOL])
                    for f in frames:
                        await ws.send(f)
                    await ws.wait_closed()
                    self.assertEqual(ws.close_code, code)
                    self.assertEqual(peer.received, [])

    async def test_raw_version_2_frames_that_break_the_protocol(self):
        good = pickle.dumps('ok', protocol=5)
        h2 = lambda **kw: pw.encode_header(**{'v': 2, 'id': 1, 'k': 'msg', 'p': len(good), 'b': [], 'ro': [], 'pk': good, **kw})
        cases = {
            'version 1 header': ([pw.encode_header(id=1, k='msg', p=len(good), b=[], ro=[]), good], 4426),
            'pk shorter than p': ([h2(p=len(good) + 1)], 4400),
            'pk a str': ([msgpack.packb({'v': 2, 'id': 1, 'k': 'msg', 'p': 2, 'pk': 'ok'})], 4400),
            'a pickle frame after an inline header': ([h2(), good], 4400),
            'id out of sequence': ([h2(id=2)], 4400),
            'buffer over the limit': ([h2(b=[2 ** 31], ro=[False])], 4413),
            'header over 64 KiB': ([h2(p=70000, pk=bytes(70000))], 1009),
        }
        for name, (frames, code) in cases.items():
            with self.subTest(name):
                async with Peer() as peer:
                    ws = await raw_connect(peer.url, subprotocols=['picklewire.v2'])
                    self.assertEqual(ws.subprotocol, 'picklewire.v2')
                    for f in frames:
                        await ws.send(f)
                    await ws.wait_closed()
                    self.assertEqual(ws.close_code, code)
                    expected = ['ok'] if name == 'a pickle frame after an inline header' else []
                    self.assertEqual(peer.received, expected)

    async def test_version_3_buffers_in_chunks_with_progress_both_ways(self):
        async with Peer(chunk_bytes=1000) as peer:
            seen = []
            sock = await peer.client(chunk_bytes=1000, on_progress=seen.append)
            self.assertEqual(sock.version, 3)
            self.assertEqual(peer.server_socks[0].version if peer.server_socks else 3, 3)
            a = np.arange(2600, dtype=np.float32)  # 10,400 bytes: 11 chunks
            sent = []
            await sock.send({'a': a, 'n': 1}, on_progress=sent.append)
            back = (await sock.recv())['a']
            np.testing.assert_array_equal(back, a)
            self.assertFalse(back.flags.writeable, 'read-only unless writable=True')
            self.assertEqual(sock.stats.frames_sent, 12, 'header (pickle inline) and 11 chunks')
            for events in (sent, seen):
                self.assertEqual([e['buffer'] for e in events], [-1] + [0] * 11)
                bytes_ = [e['bytes'] for e in events]
                self.assertEqual(bytes_, sorted(bytes_))
                self.assertEqual(events[-1]['bytes'], events[-1]['total'])
                self.assertEqual(events[-1]['buffer_bytes'], a.nbytes)
                self.assertEqual(events[-1]['buffer_total'], a.nbytes)
            await sock.close()

    async def test_version_3_with_a_key_covers_the_chunks(self):
        async with Peer(chunk_bytes=512, key='k') as peer:
            sock = await peer.client(chunk_bytes=300, key='k')
            a = np.arange(1000, dtype=np.int64)
            await sock.send(a)
            np.testing.assert_array_equal(await sock.recv(), a)
            await sock.close()

    async def test_version_3_a_cancelled_send_is_dropped_and_the_next_message_arrives(self):
        async with Peer(chunk_bytes=4096) as peer:
            sock = await peer.client(chunk_bytes=4096)
            big = np.ones(4 * 2 ** 20, dtype=np.uint8)  # 1,024 chunks
            started = asyncio.Event()

            def on_progress(e):
                if e['buffer_bytes'] >= 64 * 1024:
                    started.set()

            task = asyncio.create_task(sock.send(big, on_progress=on_progress))
            await started.wait()
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(sock.stats.messages_cancelled, 1)
            await sock.send('next')
            self.assertEqual(await sock.recv(), 'next')
            self.assertEqual(peer.received, ['next'])
            self.assertEqual(peer.server_socks[0].stats.messages_cancelled_by_peer, 1)
            await sock.close()

    async def test_version_3_discard_drops_a_message_while_it_arrives_and_the_sender_stops(self):
        refused = []

        async def handler(sock):
            async for value in sock:
                try:
                    await sock.send(value)
                except pw.TransportError as e:
                    refused.append(e)

        # same_host off: the buffer comes in chunks, not through a file (test_same_host_*)
        async with pw.serve(handler, chunk_bytes=4096, same_host=False) as server:
            sock = await pw.connect(f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/')

            events = []

            def on_progress(e):
                events.append(e)
                if e['buffer'] == 0 and e['buffer_bytes'] < e['buffer_total']:
                    events.append(sock.discard(e['id']))

            sock.on_progress = on_progress
            await sock.send(np.zeros(4 * 2 ** 20, np.uint8))
            await sock.send('after')
            self.assertEqual(await sock.recv(), 'after')
            self.assertEqual(sock.stats.messages_discarded, 1)
            self.assertEqual([e.code for e in refused], ['REMOTE'], 'the refuse frame stopped the echo mid-way')
            self.assertIn('refused message 1', str(refused[0]))
            self.assertEqual(events[2], True, 'the first chunk of the buffer discards the message')
            self.assertEqual([e['id'] for e in events[3:]], [events[0]['id'] + 1], 'no progress for a message once discarded')
            self.assertFalse(sock.discard(99))
            await sock.close()

    async def test_raw_version_3_frames_that_break_the_protocol(self):
        good = pickle.dumps('ok', protocol=5)
        h3 = lambda **kw: pw.encode_header(**{'v': 3, 'id': 1, 'k': 'msg', 'p': len(good), 'b': [], 'ro': [], 'pk': good, **kw})
        cases = {
            'chunks beyond the announced size': ([h3(b=[10], ro=[False]), bytes(6), bytes(6)], 4400, 'beyond the announced size'),
            'a cancel for no message': (['cancel 1'], 4400, 'no message is in progress'),
            'a cancel for another message': ([h3(b=[10], ro=[False]), bytes(4), 'cancel 2'], 4400, 'cancel frame for message 2'),
            'a text frame that is no cancel': ([h3(b=[10], ro=[False]), 'hello'], 4400, 'not a cancel or refuse frame'),
            'a refuse for a message never sent': (['refuse 1'], 4400, 'which this side has not sent'),
            'a chunk after a cancel': ([h3(b=[10], ro=[False]), bytes(4), 'cancel 1', bytes(6)], 4400, 'bad message header'),
            'an empty chunk': ([h3(b=[10], ro=[False]), bytes(4), b''], 4400, 'empty chunk'),
            'a buffer over the limit': ([h3(b=[2 ** 31], ro=[False])], 4413, 'max_buffer_bytes'),
        }
        for name, (frames, code, words) in cases.items():
            with self.subTest(name):
                async with Peer() as peer:
                    ws = await raw_connect(peer.url, subprotocols=['picklewire.v3'])
                    self.assertEqual(ws.subprotocol, 'picklewire.v3')
                    for f in frames:
                        await ws.send(f)
                    await ws.wait_closed()
                    self.assertEqual(ws.close_code, code)
                    self.assertIn(words, str(peer.server_errors[0]) if peer.server_errors else ws.close_reason)
                    self.assertEqual(peer.received, [])

    async def test_peer_gone_mid_message_is_an_error(self):
        async with Peer() as peer:
            ws = await raw_connect(peer.url, subprotocols=[pw.SUBPROTOCOL])
            await ws.send(pw.encode_header(id=1, k='msg', p=3, b=[100], ro=[False]))
            await ws.send(b'\x80\x05.')
            ws.transport.abort()
            for _ in range(100):
                if peer.server_errors:
                    break
                await asyncio.sleep(0.02)
            self.assertEqual(peer.server_errors[0].code, 'CLOSED')
            self.assertIn('message 1', str(peer.server_errors[0]))
            self.assertEqual(peer.received, [])

    async def test_clean_close_ends_iteration_and_fails_later_sends(self):
        async with Peer() as peer:
            sock = await peer.client()
            await sock.send(1)
            self.assertEqual(await sock.recv(), 1)
            await sock.close()
            self.assertIsNone(sock.error)
            self.assertEqual([v async for v in sock], [])
            with self.assertRaises(pw.TransportError) as e:
                await sock.send(2)
            self.assertEqual(e.exception.code, 'CLOSED')

    async def test_a_slow_consumer_makes_the_sender_wait(self):
        done = asyncio.Event()
        taken = []

        async def handler(sock):
            await done.wait()
            async for value in sock:
                taken.append(value[0])
                if len(taken) == 40:
                    return

        async with pw.serve(handler, queue_size=1, max_queue=1) as server:
            url = f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/'
            sock = await pw.connect(url)
            payload = np.zeros(2 ** 20, np.uint8)
            sent = 0

            async def send_all():
                nonlocal sent
                for i in range(40):
                    await sock.send((i, payload))
                    sent += 1

            sender = asyncio.create_task(send_all())
            await asyncio.sleep(0.5)
            self.assertLess(sent, 40, 'the sender waits while nobody reads')
            done.set()
            await sender
            await sock.closed
            self.assertEqual(taken, list(range(40)))


    async def test_a_refused_global_is_an_error_for_its_receiver_and_the_connection_stays_up(self):
        scratch = tempfile.TemporaryDirectory()
        self.addCleanup(scratch.cleanup)
        marker = os.path.join(scratch.name, 'ran')
        got, answers = [], []

        async def handler(sock):
            while True:
                try:
                    got.append(await sock.recv())
                except pickle.UnpicklingError as e:
                    got.append(e)
                except pw.TransportError:
                    return

        async with pw.serve(handler, on_request=lambda v: ('answer', v)) as server:
            sock = await pw.connect(f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/')
            await sock.send(Runs(os.system, f'touch {marker}'))
            await sock.send(fractions.Fraction(1, 3))
            await sock.send('after')
            with self.assertRaises(pw.TransportError) as e:
                await sock.request(Runs(os.system, f'touch {marker}'))
            answers.append(await sock.request('still up'))
            for _ in range(100):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.02)
            await sock.close()
        self.assertFalse(os.path.exists(marker), 'os.system never ran')
        self.assertIsInstance(got[0], pickle.UnpicklingError)
        self.assertIn('"posix.system" is not allowed', str(got[0]))
        self.assertIsInstance(got[1], pickle.UnpicklingError)
        self.assertIn('"fractions.Fraction"', str(got[1]))
        self.assertEqual(got[2], 'after', 'the connection stays up after a refused message')
        self.assertEqual(e.exception.code, 'REMOTE')
        self.assertIn('UnpicklingError', str(e.exception))
        self.assertIn('"posix.system"', str(e.exception))
        self.assertEqual(answers, [('answer', 'still up')])

    async def test_allow_widens_the_default_and_unpickler_replaces_it(self):
        async with Peer(allow={'fractions.Fraction'}) as peer:
            sock = await peer.client(allow=['fractions.Fraction'])
            await sock.send({'third': fractions.Fraction(1, 3), 'a': np.arange(3)})
            back = await sock.recv()
            self.assertEqual(back['third'], fractions.Fraction(1, 3))
            np.testing.assert_array_equal(back['a'], np.arange(3))
            await sock.close()
        for protocol in range(6):  # protocols 0-1 go through copyreg._reconstructor, 2-5 through NEWOBJ
            with self.subTest(protocol=protocol):
                data = pickle.dumps(Point(7), protocol=protocol)
                with self.assertRaises(pickle.UnpicklingError):
                    pw.restricted_loads(data)
                self.assertEqual(pw.restricted_loads(data, allow={'test_ws.Point'}).x, 7)
        async with Peer(unpickler=pickle.Unpickler) as peer:
            sock = await peer.client(unpickler=pickle.Unpickler)
            await sock.send(fractions.Fraction(2, 3))
            self.assertEqual(await sock.recv(), fractions.Fraction(2, 3))
            await sock.close()
        misuse = [
            ({'allow': 'fractions.Fraction'}, TypeError, 'not the string'),
            ({'allow': ['Fraction']}, TypeError, '"module.name"'),
            ({'unpickler': pickle.loads}, TypeError, 'pickle.Unpickler subclass'),
            ({'unpickler': pickle.Unpickler, 'allow': ['fractions.Fraction']}, TypeError, 'set allow on that class instead'),
            ({'max_concurrent_requests': 0}, ValueError, 'at least 1'),
            ({'reply_high_water': '8M'}, TypeError, 'must be an int'),
        ]
        for options, error, text in misuse:
            with self.subTest(options=options):
                with self.assertRaises(error) as e:
                    await pw.connect('ws://127.0.0.1:1/', **options)
                self.assertIn(text, str(e.exception))

    def test_default_admits_what_python_and_numpy_pickle(self):
        import collections, datetime, decimal, uuid
        values = [
            {1, 2}, frozenset('ab'), bytearray(b'xy'), 2 - 1j, range(3, 9, 2), slice(1, None), Ellipsis, NotImplemented,
            collections.OrderedDict(a=1), collections.deque([1, 2], 5), collections.defaultdict(list, a=[1]),
            collections.Counter('abca'), datetime.datetime(2024, 2, 29, 1, 2, 3, 4, datetime.timezone.utc),
            datetime.date(2020, 1, 1), datetime.time(1, 2), datetime.timedelta(3, 4, 5), decimal.Decimal('1.25'),
            uuid.UUID(int=12345), b'bytes', np.float32(1.5), np.datetime64('2020-01-01', 'ns'), np.str_('s'),
            np.dtype([('a', '<i4'), ('b', 'O')]), np.dtype(('>f8', (2, 3))), np.dtype('m8[5s]'),
            np.arange(12, dtype='>i2').reshape(3, 4).T, np.array([1, 'a', None], object),
            np.zeros(2, [('a', '<i4'), ('t', 'M8[us]')]), np.zeros(3, 'U4'),
        ]
        for protocol in range(6):
            for v in values:
                with self.subTest(protocol=protocol, value=v):
                    data = pickle.dumps(v, protocol=protocol)
                    got, expected = pw.restricted_loads(data), pickle.loads(data)
                    # the walk that checks memo indexes reads every opcode of it up to STOP
                    with self.assertRaisesRegex(pickle.UnpicklingError, 'memo index 2147483647 is past the end'):
                        pw.restricted_loads(data[:-1] + b'r\xff\xff\xff\x7f.')
                    self.assertIs(type(got), type(expected))
                    if isinstance(v, np.ndarray):
                        self.assertEqual(got.dtype, expected.dtype)
                        np.testing.assert_array_equal(got, expected)
                    else:
                        self.assertEqual(repr(got), repr(expected))

    async def test_a_received_buffer_is_freed_when_its_value_is_dropped_without_the_cycle_collector(self):
        import gc
        import weakref
        bufs: list[pickle.PickleBuffer] = []
        data = pickle.dumps(np.arange(1000, dtype=np.float32), protocol=5, buffer_callback=bufs.append)
        gc.disable()
        try:
            for load in (lambda a: pw.restricted_loads(data, buffers=[pickle.PickleBuffer(a)]),
                         lambda a: pw.PickleSocket._decode(Decoder(), Message(data, [a.data.cast('B')]))):
                received = np.ones(1000, np.float32)  # stands for the memory a message arrived in
                gone = weakref.ref(received)
                value = load(received)
                np.testing.assert_array_equal(value, np.ones(1000, np.float32))
                del value, received
                self.assertIsNone(gone(), 'the unpickler kept the buffer it was given')
        finally:
            gc.enable()

    def test_hostile_pickles_are_refused_before_they_run_or_crash(self):
        # In a child process: before these checks some of them crashed the interpreter.
        script = f"""
import json, pickle, sys
sys.path.insert(0, {HERE!r})
import numpy as np
from picklewire import ws as pw
from test_ws import Runs, DTypeWithState, CRASHING_DTYPE
core = np._core if hasattr(np, '_core') else np.core
cases = {{
    'datetime dtype with a version 3 state': pickle.dumps(CRASHING_DTYPE, protocol=4),
    'timedelta dtype with a version 3 state': pickle.dumps(DTypeWithState('m8', (3, '<', None, None, None, -1, -1, 0)), protocol=2),
    'dtype flags over a byte': pickle.dumps(DTypeWithState('f8', (3, '<', None, None, None, -1, -1, 2 ** 40)), protocol=4),
    'object flags on a plain dtype': pickle.dumps(DTypeWithState('V8', (3, '|', None, None, None, 8, 1, 63)), protocol=4),
    'dtype state of another kind': pickle.dumps(DTypeWithState('f8', (3, '|', None, ('a',), {{'a': (np.dtype('O'), 0)}}, 8, 1, 63)), protocol=4),
    'dtype without copy': pickle.dumps(Runs(np.dtype, 'f8', False, False), protocol=4),
    'array data shorter than its shape': pickle.dumps(Runs(core.multiarray._reconstruct, np.ndarray, (0,), b'b'), protocol=4)[:-1]
        + pickle.dumps((1, (1000,), np.dtype('f8'), False, b'x' * 8), protocol=4)[2:-1] + b'b.',
    '_reconstruct of a huge shape': pickle.dumps(Runs(core.multiarray._reconstruct, np.ndarray, (10 ** 12,), b'b'), protocol=4),
    'numpy.ndarray called': pickle.dumps(Runs(np.ndarray, (10 ** 12,)), protocol=4),
    'numpy.ndarray over a short buffer': pickle.dumps(Runs(np.ndarray, (10 ** 6,), np.dtype('f8'), b'\\x00' * 8), protocol=4),
    'numpy.ndarray with strides past its buffer': pickle.dumps(Runs(np.ndarray, (2, 3), np.dtype('f8'), b'\\x00' * 48, 0, (8, 64), 'C'), protocol=4),
    'object array from a buffer': pickle.dumps(Runs(core.numeric._frombuffer, b'\\x00' * 16, np.dtype('O'), (2,), 'C'), protocol=4),
    'set of a lazy range': pickle.dumps(Runs(set, range(10 ** 12)), protocol=4),
    'memo index of 2**31': b'\\x80\\x05K\\x01r\\xff\\xff\\xff\\x7f.',
    'os.system': pickle.dumps(Runs(__import__('os').system, 'true'), protocol=0),
    'builtins.eval': pickle.dumps(Runs(eval, '1'), protocol=5),
    'Python 2 name at protocol 4': b'\\x80\\x04\\x8c\\x0b__builtin__\\x8c\\x03set\\x93).',
    'copyreg._reconstructor of another base': pickle.dumps(Runs(__import__('copyreg')._reconstructor, list, list, [1]), protocol=2),
    'BYTEARRAY8 announcing 8 GiB': b'\\x80\\x05\\x96' + (2 ** 33).to_bytes(8, 'little') + b'.',
    'memo index of 2**31 after a GLOBAL': b'\\x80\\x02cbuiltins\\nset\\nr\\xff\\xff\\xff\\x7f.',
    'negative BINSTRING length': b'\\x80\\x02T\\xfb\\xff\\xff\\xff.',
    'cut inside an argument': b'\\x80\\x02r\\x01',
    'str array past U+10FFFF': pickle.dumps(np.array(['ab', 'cd']), protocol=3).replace('c'.encode('utf-32-le'), bytes.fromhex('00008100')),
}}
out = {{}}
for name, data in cases.items():
    try:
        out[name] = ['loaded', repr(pw.restricted_loads(data))[:100]]
    except Exception as e:
        out[name] = [type(e).__name__, str(e)]
print(json.dumps(out))
"""
        r = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=60, cwd=HERE)
        self.assertEqual(r.returncode, 0, f'the child survived: {r.returncode} {r.stderr[-2000:]}')
        out = json.loads(r.stdout)
        expected = {
            'datetime dtype with a version 3 state': 'must end with (metadata, (unit, num, den, events))',
            'timedelta dtype with a version 3 state': 'must end with (metadata, (unit, num, den, events))',
            'dtype flags over a byte': 'flags must be a byte',
            'object flags on a plain dtype': 'is not the state numpy writes',
            'dtype state of another kind': 'is not the state numpy writes',
            'dtype without copy': "numpy writes (type string such as 'f8', False, True)",
            'array data shorter than its shape': 'needs 8000 bytes, got 8 bytes',
            '_reconstruct of a huge shape': "numpy writes (numpy.ndarray, (0,), b'b')",
            'numpy.ndarray called': 'makes arrays over a buffer only',
            'numpy.ndarray over a short buffer': 'a buffer of 8 bytes does not hold shape (1000000,)',
            'numpy.ndarray with strides past its buffer': 'do not lay out shape (2, 3) of float64 densely',
            'object array from a buffer': 'cannot be made from a buffer',
            'set of a lazy range': 'goes over the',
            'memo index of 2**31': 'memo index 2147483647 is past the end',
            'os.system': '"posix.system" is not allowed',
            'builtins.eval': '"builtins.eval" is not allowed',
            'Python 2 name at protocol 4': '"__builtin__.set" is not allowed',
            'copyreg._reconstructor of another base': 'a restricted load makes only (an admitted class, object, None)',
            'BYTEARRAY8 announcing 8 GiB': 'announces 8589934592 bytes, and 1 remain',
            'memo index of 2**31 after a GLOBAL': 'memo index 2147483647 is past the end',
            'negative BINSTRING length': 'truncated',
            'cut inside an argument': 'truncated',
            'str array past U+10FFFF': 'holds a code point past U+10FFFF',
        }
        for name, text in expected.items():
            with self.subTest(name):
                kind, message = out[name]
                self.assertEqual(kind, 'UnpicklingError', message)
                self.assertIn(text, message)

    async def test_the_crashing_dtype_gets_an_err_reply_and_the_server_serves_the_next_client(self):
        server = subprocess.Popen([sys.executable, os.path.join(HERE, 'interop_peer.py'), 'echo-server'],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = await asyncio.get_running_loop().run_in_executor(None, server.stdout.readline)
            url = f"ws://127.0.0.1:{json.loads(line)['port']}/"
            sock = await pw.connect(url)
            with self.assertRaises(pw.TransportError) as e:
                await sock.request(CRASHING_DTYPE)
            self.assertEqual(e.exception.code, 'REMOTE')
            self.assertIn("UnpicklingError: numpy.dtype('M8') state", str(e.exception))
            self.assertIn('datetime64/timedelta64', str(e.exception))
            self.assertEqual((await sock.request({'op': 'scale', 'by': 2, 'array': np.arange(3)})).tolist(), [0, 2, 4])
            await sock.close()
            other = await pw.connect(url)
            self.assertEqual(await other.request('next client'), 'next client')
            await other.close()
            self.assertIsNone(server.poll(), 'the server process is alive')
        finally:
            server.kill()
            server.communicate()

    async def test_a_frame_over_the_header_limit_is_refused_at_its_length(self):
        for version, subprotocol in ((1, 'picklewire.v1'), (2, 'picklewire.v2')):
            with self.subTest(version=version):
                async with Peer() as peer:
                    ws = await raw_connect(peer.url, subprotocols=[subprotocol])
                    # a binary frame announcing 1 GiB, then a few bytes of it: websockets would
                    # wait for all of it (and buffer it) under a 1 GiB max_size
                    ws.transport.write(b'\x82\xff' + (2 ** 30).to_bytes(8, 'big') + b'\x00' * 4 + b'\x00' * 1000)
                    await asyncio.wait_for(ws.wait_closed(), 5)
                    self.assertEqual(ws.close_code, 1009)
                    self.assertIn('header limit of 65536 bytes', ws.close_reason)
                    await asyncio.sleep(0.05)
                    self.assertEqual(peer.server_errors[0].code, 'LIMIT')
                    self.assertIn('1073741824 bytes in header position', str(peer.server_errors[0]))

    async def test_a_frame_longer_than_its_header_announced_is_refused_at_its_length(self):
        async with Peer() as peer:
            ws = await raw_connect(peer.url, subprotocols=[pw.SUBPROTOCOL])
            await ws.send(pw.encode_header(id=1, k='msg', p=3, b=[4096], ro=[False]))
            await ws.send(b'\x80\x05.')
            ws.transport.write(b'\x82\xff' + (2 ** 30).to_bytes(8, 'big') + b'\x00' * 4 + b'\x00' * 1000)
            await asyncio.wait_for(ws.wait_closed(), 5)
            self.assertEqual(ws.close_code, 4400)
            await asyncio.sleep(0.05)
            self.assertIn('buffer 0 of message 1 is 1073741824 bytes; its header announced 4096', str(peer.server_errors[0]))
            self.assertEqual(peer.received, [])
        async with Peer() as peer:  # frames of the sizes announced still pass, a header at a time
            sock = await peer.client()
            big = np.arange(2 ** 18, dtype=np.float64)  # a 2 MiB buffer frame after a small header
            await sock.send({'a': big, 'pad': b'x' * 40000})
            np.testing.assert_array_equal((await sock.recv())['a'], big)
            await sock.close()

    async def test_a_client_that_never_reads_replies_is_held_back(self):
        def reply(value):
            return np.full(2 ** 17, value[0], np.float64)  # 1 MiB

        async with Peer(on_request=reply, max_concurrent_requests=4, reply_high_water=2 ** 21) as peer:
            ws = await raw_connect(peer.url, subprotocols=[pw.SUBPROTOCOL], max_queue=1)
            sent = 0

            async def ask():
                nonlocal sent
                for i in range(300):
                    data = pickle.dumps((i, bytes(2 ** 18)), protocol=5)  # 300 x 256 KiB: more than TCP buffers hold
                    await ws.send(pw.encode_header(id=i + 1, k='req', p=len(data), b=[], ro=[]))
                    await ws.send(data)
                    sent += 1

            asker = asyncio.create_task(ask())
            await asyncio.sleep(3)
            server = peer.server_socks[0]
            self.assertLess(server.stats.messages_received, 40, 'the server stopped reading requests')
            self.assertLessEqual(server._answering, 4)
            self.assertGreater(server.stats.request_pauses, 0)
            self.assertLess(sent, 300, 'TCP holds the client back')
            asker.cancel()
            ws.transport.abort()

    def test_header_errors_say_what_is_wrong(self):
        def nested(levels):
            v = []
            for _ in range(levels - 1):
                v = [v]
            return v

        cases = {
            b'\x91' * 2000 + b'\xc0': 'nested more than 256 levels deep',
            msgpack.packb({'v': 1, 'id': 1, 'x': {'deep': nested(300)}}): 'nested more than 256 levels deep',
            b'\xc1': 'byte 0xc1 begins no msgpack value',
            msgpack.packb({'v': 1}) + b'\x00': 'bytes after the header map',
            msgpack.packb({'v': 1, 'id': 1, 'k': 'msg', 'p': 2.0, 'b': [], 'ro': []}): 'p must be an unsigned integer, got 2.0',
        }
        for frame, text in cases.items():
            with self.subTest(text):
                with self.assertRaises(pw.TransportError) as e:
                    pw.decode_header(frame, pw.DEFAULT_LIMITS)
                self.assertIn(text, str(e.exception))


    async def test_a_send_returns_only_when_its_bytes_are_written_and_fails_when_the_peer_dies(self):
        from websockets.asyncio.server import serve as raw_serve

        async def reads_slowly_then_dies(ws):
            # a reader slower than the sender, so that sends wait for the socket; then a reset
            for _ in range(40):
                await ws.recv()
                await asyncio.sleep(0.01)
            ws.transport.abort()

        async with raw_serve(reads_slowly_then_dies, '127.0.0.1', 0, subprotocols=[pw.SUBPROTOCOL], max_queue=1,
                             max_size=None) as server:
            sock = await pw.connect(f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/', protocol_version=1)
            # a small kernel buffer takes a message a few KiB at a time: the rest waits in asyncio's
            import socket
            sock.ws.transport.get_extra_info('socket').setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            returned, still_buffered = 0, []
            payload = np.zeros(2 ** 18, np.uint8)
            with self.assertRaises(pw.TransportError) as e:
                while True:
                    await sock.send(payload)
                    returned += 1
                    left = sock.ws.transport.get_write_buffer_size()
                    if left:
                        still_buffered.append(left)
            self.assertEqual(e.exception.code, 'CLOSED')
            self.assertEqual(still_buffered, [], 'no send returned with bytes of its message still in asyncio\'s buffer')
            self.assertEqual(sock.stats.messages_sent, returned)
            self.assertGreater(returned, 0)

    async def test_a_write_limit_of_the_application_still_sends(self):
        # websockets' own write_limit (32 KiB): send() returns with bytes still buffered, which is
        # the application's choice and no error
        async with Peer() as peer:
            sock = await peer.client(write_limit=2 ** 15)
            for i in range(300):
                await sock.send({'i': i, 'pad': bytes(4000)})
            for i in range(300):
                self.assertEqual((await sock.recv())['i'], i)
            self.assertEqual(sock.stats.messages_sent, 300)
            await sock.close()

    # -- the same-host path (version 3): Python <-> Python, both sides map ----------------------

    async def _same_host_pair(self, peer, **options):
        sock = await peer.client(**options)
        for _ in range(300):
            if sock.same_host and peer.server_socks and peer.server_socks[0].same_host:
                break
            await asyncio.sleep(0.01)
        return sock

    @unittest.skipUnless(pw.same_host_available(), 'Linux with /proc only')
    async def test_same_host_buffers_are_mapped_both_ways_without_a_copy(self):
        before = sorted(n for n in os.listdir('/dev/shm') if n.startswith('picklewire'))
        async with Peer() as peer:
            sock = await self._same_host_pair(peer)
            self.assertTrue(sock.same_host)
            a = np.arange(2 ** 20, dtype=np.float32)  # 4 MiB: through a file
            small = np.arange(10_000, dtype=np.float32)  # out of band, under 1 MiB: a frame
            await sock.send({'a': a, 'small': small})
            back = await sock.recv()
            np.testing.assert_array_equal(back['a'], a)
            np.testing.assert_array_equal(back['small'], small)
            self.assertFalse(back['a'].flags.writeable, 'read-only, as buffers that come as frames (writable=False)')
            self.assertFalse(back['a'].flags.owndata, 'a view over the mapping')
            self.assertRegex(_mapping_of(back['a']), r'(/memfd:picklewire|/picklewire-)',
                             'the array is over a mapping of the sender\'s file')
            self.assertEqual(sock.stats.buffers_same_host_sent, 1)
            self.assertEqual(sock.stats.buffers_same_host_received, 1)
            self.assertEqual(sock.stats.bytes_same_host_received, a.nbytes)
            self.assertEqual(sock.stats.bytes_copied, 0)
            server = peer.server_socks[0]
            self.assertEqual(server.stats.buffers_same_host_received, 1)
            self.assertEqual(server.stats.buffers_same_host_sent, 1)
            self.assertLess(sock.stats.bytes_sent, 41_000, 'the WebSocket carried the header and the small buffer only')
            await sock.close()
        self.assertEqual(sorted(n for n in os.listdir('/dev/shm') if n.startswith('picklewire')), before)

    @unittest.skipUnless(pw.same_host_available(), 'Linux with /proc only')
    async def test_same_host_writable_buffers_are_copy_on_write(self):
        async with Peer(writable=True) as peer:
            sock = await self._same_host_pair(peer, writable=True)
            a = np.ones(2 ** 20, dtype=np.float32)
            await sock.send(a)
            back = await sock.recv()
            self.assertTrue(back.flags.writeable)
            back[0] = 42  # stays in this process: the mapping is private
            np.testing.assert_array_equal(peer.received[0], a, 'the server\'s mapping of the same bytes is unchanged')
            self.assertEqual(a[0], 1)
            self.assertEqual(sock.stats.bytes_copied, 0)
            await sock.close()

    @unittest.skipUnless(pw.same_host_available(), 'Linux with /proc only')
    async def test_same_host_with_a_key_and_off_on_either_side(self):
        async with Peer(key='k') as peer:
            sock = await self._same_host_pair(peer, key='k')
            a = np.arange(2 ** 19, dtype=np.float64)
            await sock.send(a)
            np.testing.assert_array_equal(await sock.recv(), a)
            self.assertEqual(sock.stats.buffers_same_host_received, 1, 'the MAC covered the mapped bytes')
            await sock.close()
        for server_on, client_on in ((False, True), (True, False)):
            async with Peer(same_host=server_on) as peer:
                sock = await peer.client(same_host=client_on)
                await asyncio.sleep(0.2)
                self.assertFalse(sock.same_host)
                a = np.arange(2 ** 19, dtype=np.float64)
                await sock.send(a)
                np.testing.assert_array_equal(await sock.recv(), a)
                self.assertEqual(sock.stats.buffers_same_host_sent + sock.stats.buffers_same_host_received, 0)
                await sock.close()

    @unittest.skipUnless(pw.same_host_available() and shutil.which('node') and os.path.exists(NODE_WS),
                         'Linux with /proc, node and the built @picklewire/transport only')
    async def test_same_host_a_node_sender_killed_after_naming_its_file_is_a_clear_error(self):
        # The Node sender names a file, flushes the header and SIGKILLs itself; this side reads
        # nothing until it is dead, so the header names a file of a dead process.
        script = (f"const {{ connectPickleSocket }} = await import({json.dumps(NODE_WS)});"
                  "const sock = await connectPickleSocket(process.argv[1]);"
                  "while (!sock.sameHost) await new Promise((r) => setTimeout(r, 5));"
                  "await sock.send('ready'); await sock.receive();"
                  "await sock.send(new Float32Array(2 ** 20)); await sock.flushed();"
                  "process.kill(process.pid, 'SIGKILL')")
        errors, values = [], []
        go, stop = asyncio.Event(), asyncio.Event()

        async def handler(sock):
            try:
                values.append(await sock.recv())
                sock.ws.transport.pause_reading()
                await sock.send('go')
                go.set()
                await stop.wait()
                sock.ws.transport.resume_reading()
                async for value in sock:
                    values.append(value)
            except pw.TransportError as e:
                errors.append(e)

        async with pw.serve(handler) as server:
            url = f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/'
            node = await asyncio.create_subprocess_exec('node', '--input-type=module', '-e', script, url)
            await go.wait()
            self.assertEqual(await node.wait(), -9, 'the Node sender was killed')
            stop.set()
            for _ in range(500):
                if errors:
                    break
                await asyncio.sleep(0.01)
        self.assertEqual(values, ['ready'], 'nothing of the message was delivered')
        self.assertEqual(errors[0].code, 'PROTOCOL')
        self.assertRegex(str(errors[0]), r'buffer 0 of message 2 .*it is gone: the sending process exited or closed it')

    @unittest.skipUnless(shutil.which('node') and os.path.exists(NODE_WS), 'node and the built @picklewire/transport only')
    async def test_a_node_sender_killed_mid_buffer_over_frames_is_a_clear_error(self):
        # The Node sender sends 64 MiB in 1 MiB chunks and SIGKILLs itself once 8 MiB have left.
        script = (f"const {{ connectPickleSocket }} = await import({json.dumps(NODE_WS)});"
                  "const sock = await connectPickleSocket(process.argv[1], { sameHost: false, chunkBytes: 2 ** 20 });"
                  "await sock.send('ready');"
                  "await sock.send(new Float32Array(2 ** 24), { onProgress: (p) => {"
                  "  if (p.bytes >= 2 ** 23) process.kill(process.pid, 'SIGKILL') } })")
        errors, values = [], []

        async def handler(sock):
            try:
                async for value in sock:
                    values.append(value)
            except pw.TransportError as e:
                errors.append(e)

        async with pw.serve(handler, same_host=False) as server:
            url = f'ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/'
            node = await asyncio.create_subprocess_exec('node', '--input-type=module', '-e', script, url)
            self.assertEqual(await asyncio.wait_for(node.wait(), 60), -9, 'the Node sender was killed')
            for _ in range(500):
                if errors:
                    break
                await asyncio.sleep(0.01)
        self.assertEqual(values, ['ready'], 'nothing of the half-sent message was delivered')
        self.assertEqual(len(errors), 1, 'the receiver ended with one TransportError')
        self.assertEqual(errors[0].code, 'CLOSED')
        self.assertRegex(str(errors[0]), r'closed \(1006\) in message 2 after .*: the message is lost')

    async def test_same_host_options_are_checked(self):
        with self.assertRaisesRegex(TypeError, 'same_host must be a bool'):
            await pw.connect('ws://127.0.0.1:1/', same_host='yes')
        with self.assertRaisesRegex(ValueError, 'same_host_min_bytes must be at least 1'):
            await pw.connect('ws://127.0.0.1:1/', same_host_min_bytes=0)

    def test_same_host_frames_grammar(self):
        self.assertEqual(pw.parse_same_host_frame('shm-challenge /proc/12/fd/0 map'), ('challenge', ('/proc/12/fd/0', 12, 'map')))
        self.assertEqual(pw.parse_same_host_frame(f"shm-proof {'ab' * 32} 7"), ('proof', ('ab' * 32, 7)))
        self.assertEqual(pw.parse_same_host_frame('shm-done 3'), ('done', 3))
        self.assertEqual(pw.parse_same_host_frame('shm-free 3'), ('free', 3))
        self.assertEqual(pw.parse_same_host_frame('shm-accept'), ('accept', None))
        for bad in ('shm-challenge /proc/012/fd/1 map', 'shm-challenge /proc/1/fd/1', f"shm-proof {'AB' * 32} 7",
                    'shm-proof ab 7', 'shm-done -1', 'shm-done 1 ', 'shm-yes', f'shm-done {2 ** 53}', 'shm-free 01',
                    'shm-free'):
            with self.assertRaisesRegex(pw.TransportError, 'malformed same-host frame'):
                pw.parse_same_host_frame(bad)

    @unittest.skipUnless(pw.same_host_available(), 'Linux with /proc only')
    def test_same_host_free_after_the_last_mapping_of_a_message_is_gone(self):
        sent: list[str] = []
        sh = pw._SameHost(True, 1, sent.append, pw.Stats())
        sh.proven_pid = os.getpid()
        fd = pw._make_region()
        try:
            os.pwrite(fd, bytes(range(256)) * 32, 0)
            place = (f'/proc/{os.getpid()}/fd/{fd}', 0)
            first = sh.map(place, 4096, 'buffer 0', 7)
            second = np.frombuffer(sh.map((place[0], 4096), 4096, 'buffer 1', 7), dtype=np.uint8)
            sh.done(7)
            self.assertEqual(sent, ['shm-done 7'], 'mappings of message 7 are alive: no shm-free yet')
            del first
            gc.collect()
            self.assertEqual(sent, ['shm-done 7'], 'one mapping is still alive')
            self.assertEqual(int(second[1]), 1)
            del second
            gc.collect()
            self.assertEqual(sent, ['shm-done 7', 'shm-free 7'])
            view = sh.map(place, 4096, 'buffer 0', 8)
            del view
            gc.collect()
            self.assertEqual(sent[2:], [], 'the mapping went before shm-done: shm-free waits for it')
            sh.done(8)
            self.assertEqual(sent[2:], ['shm-done 8', 'shm-free 8'])
            sh.done(9)  # a message cancelled before anything of it was mapped
            self.assertEqual(sent[4:], ['shm-done 9', 'shm-free 9'])
        finally:
            os.close(fd)

    @unittest.skipUnless(pw.same_host_available(), 'Linux with /proc only')
    def test_same_host_read_only_buffers_of_one_file_share_a_kept_mapping(self):
        sent: list[str] = []
        sh = pw._SameHost(True, 1, sent.append, pw.Stats())
        sh.proven_pid = os.getpid()
        fd = pw._make_region()
        try:
            os.pwrite(fd, b'\x01' * 8192, 0)
            path = f'/proc/{os.getpid()}/fd/{fd}'
            first = np.frombuffer(sh.map((path, 4096), 4096, 'buffer 0', 1, readonly=True), dtype=np.uint8)
            self.assertFalse(first.flags.writeable)
            with self.assertRaises(ValueError):
                first.flags.writeable = True  # nothing writes through the kept mapping
            where = _mapping_of(first)
            self.assertRegex(where, r'(/memfd:picklewire|/picklewire-)')
            sh.done(1)
            self.assertEqual(sent, ['shm-done 1'])
            del first
            gc.collect()
            self.assertEqual(sent, ['shm-done 1', 'shm-free 1'], 'the view is gone; the kept mapping does not hold shm-free back')
            os.pwrite(fd, b'\x02' * 4096, 4096)  # the peer writes the file again after shm-free
            second = np.frombuffer(sh.map((path, 4096), 4096, 'buffer 0', 2, readonly=True), dtype=np.uint8)
            self.assertEqual(_mapping_of(second), where, 'read through the same mapping')
            self.assertTrue((second == 2).all(), 'which shows what the peer wrote since')
            os.pwrite(fd, b'\x03' * 8192, 8192)  # the file grows past the kept mapping
            third = np.frombuffer(sh.map((path, 12288), 4096, 'buffer 0', 3, readonly=True), dtype=np.uint8)
            self.assertTrue((third == 3).all())
            self.assertTrue((second == 2).all(), 'a view of the mapping made before stays valid')
            writable = np.frombuffer(sh.map((path, 0), 4096, 'buffer 0', 4), dtype=np.uint8)
            writable[0] = 9  # a writable buffer gets a private mapping of its own
            self.assertEqual(os.pread(fd, 1, 0), b'\x01')
            sh.close()
            self.assertTrue((third == 3).all(), 'views outlive the connection')
        finally:
            os.close(fd)

    @unittest.skipUnless(pw.same_host_available(), 'Linux with /proc only')
    def test_same_host_a_sender_writes_a_file_again_only_after_shm_free(self):
        sent: list[str] = []
        stats = pw.Stats()
        sh = pw._SameHost(True, 1, sent.append, stats)
        sh._proof = 'accepted'
        sh._peer_mode = 'map'  # as the peer's challenge says
        data = [memoryview(bytes(8192))]
        try:
            path1 = sh.place(1, data)[0][0]
            sh.control('shm-done 1')
            path2 = sh.place(2, data)[0][0]
            self.assertNotEqual(path2, path1, 'file 1 may still be mapped: not written again')
            sh.control('shm-free 1')
            sh.control('shm-done 2')
            path3 = sh.place(3, data)[0][0]
            self.assertEqual(path3, path1, 'file 1 was freed: written again')
            self.assertEqual(stats.files_same_host_made, 2)
            for bad, why in (('shm-free 1', 'awaits shm-free'), ('shm-free 3', 'awaits shm-free'),
                             ('shm-free 44', 'named no file')):
                with self.assertRaisesRegex(pw.TransportError, why):
                    sh.control(bad)
        finally:
            sh.close()

    async def test_same_host_places_are_checked(self):
        sh = pw._SameHost(True, 1, lambda text: None, pw.Stats())
        h = {'id': 1, 'b': [4096], 'x': {'sm': [['/proc/5/fd/3', 0]]}}
        with self.assertRaisesRegex(pw.TransportError, 'accepted no same-host proof'):
            sh.places(h)
        sh.proven_pid = 5
        self.assertEqual(sh.places(h), [('/proc/5/fd/3', 0)])
        for sm, why in (([['/etc/passwd', 0]], 'must be /proc/<pid>/fd/<fd>'), ([['/proc/6/fd/3', 0]], 'not in the proven process 5'),
                        ([['/proc/5/fd/3', 100]], 'multiple of 4096'), ([None, None], 'array of 1 items'),
                        ([['/proc/5/fd/3']], 'nil or \\[path, offset\\]')):
            with self.assertRaisesRegex(pw.TransportError, why):
                sh.places({'id': 1, 'b': [4096], 'x': {'sm': sm}})
        with self.assertRaisesRegex(pw.TransportError, 'it is gone'):
            sh.map(('/proc/5/fd/999999', 0) if not os.path.exists('/proc/5/fd/999999') else ('/proc/1/fd/999999', 0), 4096, 'buffer 0', 1)


def _mapping_of(a) -> str:
    """The line of /proc/self/maps holding the first byte of array a."""
    address = a.__array_interface__['data'][0]
    with open('/proc/self/maps') as f:
        for line in f:
            start, end = (int(h, 16) for h in line.split()[0].split('-'))
            if start <= address < end:
                return line.strip()
    return ''


if __name__ == '__main__':
    unittest.main()
