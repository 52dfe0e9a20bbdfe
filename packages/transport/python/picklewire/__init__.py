"""picklewire for Python: the peer of @picklewire/transport.

`picklewire.ws` speaks picklewire's WebSocket protocol (docs/wire-protocol.md) with asyncio,
websockets and msgpack: values go as pickle protocol 5 with their out-of-band buffers (numpy
arrays) in frames of their own, and come back as arrays over the received bytes.

    from picklewire import ws
"""

__version__ = '0.1.0'
