"""Process lifecycle: serve, register, wait for a signal, shut down cleanly.

Order on SIGTERM/SIGINT: deregister from Consul (so no new traffic is routed
here), stop the server, then flush spans so the last requests' spans go out.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Sequence

from aiohttp import web

from . import tracing
from .app import SampleApp
from .config import SampleConfig, parse_args
from .registration import RegistrationError, make_registrar

SPAN_FLUSH_TIMEOUT = 5.0


def _say(line: str) -> None:
    print(f"meshbed.sample: {line}", file=sys.stderr, flush=True)


async def serve(config: SampleConfig, stop: asyncio.Event | None = None) -> int:
    """Run one instance until ``stop`` is set or a signal arrives; return the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    provider = tracing.make_provider(config)
    registrar = make_registrar(config)  # Consul, or Eureka when MESHBED_SAMPLE_EUREKA is set
    sample = SampleApp(config, provider=provider, registrar=registrar)
    runner = web.AppRunner(sample.build(), access_log=None, handle_signals=False)
    await runner.setup()
    code = 0
    try:
        site = web.TCPSite(runner, config.listen.host, config.listen.port, shutdown_timeout=2.0,
                           backlog=1024, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            _say(f"{config.instance}: cannot listen on {config.listen}: {exc.strerror or exc}")
            return 1
        if registrar is not None:
            try:
                await registrar.start()
            except RegistrationError as exc:
                _say(f"{config.instance}: Consul registration failed for "
                     f"{config.register_timeout:g}s: {exc}")
                return 1
        _say(f"{config.instance} ({config.service} {config.version}) listening on {config.listen}")
        await stop.wait()
        code = 0
    finally:
        if registrar is not None:
            await registrar.close()
        await runner.cleanup()
        try:
            await asyncio.wait_for(asyncio.to_thread(provider.shutdown), SPAN_FLUSH_TIMEOUT)
        except asyncio.TimeoutError:
            _say(f"{config.instance}: span flush timed out")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m meshbed.sample``."""
    config = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        return asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0
