"""A TCP proxy in front of PostgreSQL that a test can cut and restore (fault injection)."""

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any

from sqlalchemy.engine import URL


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the server of ``upstream``; ``cut()`` drops every
    connection and refuses new ones until ``restore()``; ``freeze()`` keeps every
    connection open but forwards nothing (a hung server, a half-open connection)
    until ``thaw()``."""

    def __init__(self, upstream: URL) -> None:
        self._upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]

    @property
    def url(self) -> URL:
        query = {k: v for k, v in self._upstream.query.items() if k != "host"}
        return self._upstream.set(host="127.0.0.1", port=self.port, query=query)

    def start(self) -> None:
        self._thread.start()
        self._call(self._listen())

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    def stop(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = self._upstream.query.get("host")
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            port = self._upstream.port or 5432
            return await asyncio.open_unix_connection(os.path.join(socket_dir, f".s.PGSQL.{port}"))
        return await asyncio.open_connection(self._upstream.host, self._upstream.port or 5432)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        await self._flowing.wait()
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            _pipe(reader, up_writer, self._flowing), _pipe(up_reader, writer, self._flowing)
        )
        self._writers -= {writer, up_writer}


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
) -> None:
    try:
        while data := await reader.read(65536):
            await flowing.wait()
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@contextlib.contextmanager
def tcp_proxy(upstream: URL) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
