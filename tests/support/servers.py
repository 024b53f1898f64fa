"""Run an ASGI app under a real uvicorn server on a free loopback port, in a thread."""

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp


class _ThreadedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the main thread (pytest)


@contextlib.contextmanager
def serve(
    app: ASGIApp,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    trusted_proxies: str = "127.0.0.1",
    startup_timeout: float = 30.0,
    **uvicorn_options: Any,
) -> Iterator[str]:
    """Yield the base URL of ``app`` served over real HTTP; stop it afterwards.

    ``trusted_proxies`` is uvicorn's --forwarded-allow-ips: peers whose
    X-Forwarded-For is believed (the tests' own client is 127.0.0.1).
    ``host`` may be any loopback address (127.0.0.0/8), so that a test can take a
    well-known port without meeting whatever else listens on 127.0.0.1.
    ``uvicorn_options``: any other uvicorn.Config option.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = _ThreadedServer(
        uvicorn.Config(
            app,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=5,
            forwarded_allow_ips=trusted_proxies,
            **uvicorn_options,
        )
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
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
