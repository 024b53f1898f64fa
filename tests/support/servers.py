"""Run an ASGI app under a real uvicorn server on a free loopback port, in a thread."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.types import ASGIApp


class _ThreadedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the main thread (pytest)


@contextlib.contextmanager
def serve(app: ASGIApp, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Yield the base URL of ``app`` served over real HTTP; stop it afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _ThreadedServer(
        uvicorn.Config(app, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
    )

    def run() -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when the lifespan fails
            server.run(sockets=[sock])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the app did not start (see its log above)")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
