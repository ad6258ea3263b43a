"""A tiny TCP forwarder: accept on a port, pipe every connection to host:port.

The docker runtime runs it (``python3 -m meshbed.runtime.forwarder LISTEN_PORT
HOST PORT`` in the meshbed/python image) when a pod member's port was not known
when the pod's pause container was created: the forwarder container publishes
that port and forwards it to the pod's IP. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

CHUNK = 65536


@dataclass(frozen=True)
class Route:
    listen_port: int
    target_host: str
    target_port: int
    listen_host: str = "0.0.0.0"


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return port


def parse_args(argv: list[str] | None = None) -> Route:
    p = argparse.ArgumentParser(prog="python3 -m meshbed.runtime.forwarder",
                                description="forward every TCP connection on LISTEN_PORT to HOST:PORT")
    p.add_argument("listen_port", type=_port)
    p.add_argument("target_host")
    p.add_argument("target_port", type=_port)
    p.add_argument("--listen-host", default="0.0.0.0")
    a = p.parse_args(argv)
    return Route(a.listen_port, a.target_host, a.target_port, a.listen_host)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy reader to writer until EOF or an error, then close the writer."""
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except Exception:  # noqa: BLE001 - a reset peer ends this direction only
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


async def _connection(route: Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.open_connection(route.target_host, route.target_port)
    except Exception:  # noqa: BLE001 - target down: drop the client, as a closed port would
        writer.close()
        return
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def start(route: Route) -> asyncio.Server:
    """Listen for ``route`` (the server is serving once this returns)."""
    return await asyncio.start_server(lambda r, w: _connection(route, r, w), route.listen_host, route.listen_port)


async def serve(route: Route) -> None:
    server = await start(route)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
