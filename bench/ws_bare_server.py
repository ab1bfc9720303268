"""The comparison server for bench/ws_fanout.py: a bare `websockets` server (uvloop) that subscribes to the same
Redis channel and broadcasts each message with `websockets.broadcast` (no auth, no queues; it answers identify
so the reconnect storm can run on it too).

Run: python bench/ws_bare_server.py <port> <redis_url> <channel>
"""

from __future__ import annotations

import sys

import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

CLIENTS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    CLIENTS.add(ws)
    try:
        await ws.send('{"type":"connected","endpoint":"/ws/desktop"}')
        async for message in ws:  # just enough protocol for the reconnect storm: identify -> identified
            if '"identify"' in message:
                await ws.send('{"type":"identified","ok":true,"userId":2}')
    except ConnectionClosed:
        pass  # the bench drops its clients without a close frame; a traceback each would cost the server CPU
    finally:
        CLIENTS.discard(ws)


async def main(port: int, redis_url: str, channel: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=64 * 1024, backlog=2048):
        print("ready", flush=True)
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                broadcast(CLIENTS, message["data"].decode())


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
