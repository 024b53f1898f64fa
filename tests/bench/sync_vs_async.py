"""Sync or async database access? Measure a FastAPI list endpoint both ways.

The same 20-row keyset list query goes through SQLModel in three FastAPI apps:

- sync: `def` routes and a sync Session (FastAPI runs them in its thread pool);
- async: `async def` routes and an AsyncSession;
- async+gate: the same, with a FIFO semaphore in front of SQLAlchemy's pool,
  as `taskstack.common.db.Database` has.

Each runs as one uvicorn worker pinned to CPU 0 while wrk loads it from CPU 1
with 32 connections and a pool of 10; the kinds alternate over several rounds
so that a noisy neighbour hurts them alike. Figures and the decision are in
docs/decisions/0002-async-database-behind-a-fair-gate.md.

    uv run python -m tests.bench.sync_vs_async [--database-url URL] [--seconds 8] [--rounds 3]
"""

import argparse
import asyncio
import contextlib
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI
from sqlalchemy import Table, create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlmodel import Field, Session, SQLModel, col, select

OWNERS = 100
ROWS_PER_OWNER = 100
POOL_SIZE = 10
KINDS = ("sync", "async", "async+gate")


class BenchItem(SQLModel, table=True):
    __tablename__ = "bench_item"
    id: uuid.UUID = Field(primary_key=True)
    owner_id: uuid.UUID
    title: str
    created_at: datetime


TABLE: Table = SQLModel.metadata.tables["bench_item"]


def first_page(owner: int) -> Any:
    return (
        select(BenchItem)
        .where(BenchItem.owner_id == uuid.UUID(int=owner + 1))
        .order_by(col(BenchItem.created_at).desc(), col(BenchItem.id).desc())
        .limit(20)
    )


def sync_app(url: str) -> FastAPI:
    engine = create_engine(url, pool_size=POOL_SIZE)

    def session() -> Iterator[Session]:
        with Session(engine) as s:
            yield s

    app = FastAPI()

    @app.get("/items/{owner}")
    def items(owner: int, s: Annotated[Session, Depends(session)]) -> list[BenchItem]:
        return list(s.exec(first_page(owner)).all())

    return app


def async_app(url: str, *, gated: bool) -> FastAPI:
    engine = create_async_engine(url, pool_size=POOL_SIZE)
    gate = asyncio.Semaphore(POOL_SIZE) if gated else contextlib.nullcontext()

    async def session() -> AsyncIterator[AsyncSession]:
        async with gate, AsyncSession(engine) as s:
            yield s

    app = FastAPI()

    @app.get("/items/{owner}")
    async def items(owner: int, s: Annotated[AsyncSession, Depends(session)]) -> list[BenchItem]:
        return list((await s.execute(first_page(owner))).scalars().all())

    return app


def seed(url: str) -> None:
    engine = create_engine(url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        TABLE.drop(conn, checkfirst=True)
        TABLE.create(conn)
        conn.execute(text("CREATE INDEX ON bench_item (owner_id, created_at DESC, id DESC)"))
        conn.execute(
            TABLE.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "owner_id": uuid.UUID(int=owner + 1),
                    "title": f"task {owner}-{i}",
                    "created_at": start + timedelta(minutes=i),
                }
                for owner in range(OWNERS)
                for i in range(ROWS_PER_OWNER)
            ],
        )
        conn.execute(text("ANALYZE bench_item"))
    engine.dispose()


WRK_SCRIPT = f"""
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/items/" .. (counter % {OWNERS}))
end
"""


def measure(kind: str, url: str, seconds: int, script: str) -> dict[str, float]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "tests.bench.sync_vs_async",
            "--serve",
            kind,
            "--database-url",
            url,
            "--port",
            str(port),
        ],
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/items/1").raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for duration in (2, seconds):  # warm-up, then the measured run
            out = subprocess.run(
                [
                    "taskset",
                    "-c",
                    "1",
                    "wrk",
                    "-t1",
                    "-c32",
                    f"-d{duration}s",
                    "--latency",
                    "-s",
                    script,
                    base,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        return parse_wrk(out)
    finally:
        server.terminate()
        server.wait()


def parse_wrk(out: str) -> dict[str, float]:
    def field(pattern: str) -> str:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {pattern!r} in wrk's output:\n{out}")
        return match.group(1)

    def ms(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(field(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": ms(field(r"^\s+50%\s+(\S+)")),
        "p99_ms": ms(field(r"^\s+99%\s+(\S+)")),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=KINDS)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    url = args.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    if args.serve:
        import uvicorn

        app = sync_app(url) if args.serve == "sync" else async_app(url, gated=args.serve != "async")
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
        return
    seed(url)
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        for _ in range(args.rounds):
            for kind in KINDS:
                results[kind].append(measure(kind, url, args.seconds, script.name))
    print(f"{'kind':<11}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'worst p99':>11}{'non-2xx':>9}")
    for kind, runs in results.items():
        print(
            f"{kind:<11}{statistics.median(r['rps'] for r in runs):>8.0f}"
            f"{statistics.median(r['p50_ms'] for r in runs):>9.1f}"
            f"{statistics.median(r['p99_ms'] for r in runs):>9.1f}"
            f"{max(r['p99_ms'] for r in runs):>11.1f}"
            f"{sum(r['non_2xx'] for r in runs):>9.0f}"
        )


if __name__ == "__main__":
    main()
