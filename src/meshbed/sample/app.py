"""HTTP handlers: the app answer, downstream fan-out, and control endpoints.

One catch-all handler serves every app path; control endpoints live under
``/meshbed/`` and ``/healthz`` and are not counted.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import sys
import time
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from . import tracing
from .config import SampleConfig
from .payload import MAX_SIZE, payload_bytes, payload_sha256
from .registration import ConsulRegistrar, RegistrationError
from .state import FaultPlan, Stats

INSTANCE_HEADER = "x-meshbed-instance"
_JSON = "application/json"


class BadQuery(ValueError):
    """A fault query option that is not a usable number."""


def _int_option(query: Any, name: str, lo: int, hi: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadQuery(f"{name} must be in {lo}..{hi}, got {value}")
    return value


def forwarded_headers(headers: Any) -> dict[str, str]:
    """Headers a downstream call carries on: request id, user and x-meshbed-*."""
    out: dict[str, str] = {}
    for key, value in headers.items():
        low = key.lower()
        if low == "x-request-id" or low == "x-user" or low.startswith("x-meshbed-"):
            out[low] = value
    return out


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class SampleApp:
    """One instance's state and handlers; build() returns the aiohttp app."""

    def __init__(
        self,
        config: SampleConfig,
        provider: TracerProvider | None = None,
        registrar: ConsulRegistrar | None = None,
    ) -> None:
        self.config = config
        self.provider = provider or tracing.make_provider(config)
        self.tracer = self.provider.get_tracer("meshbed.sample")
        self.registrar = registrar
        self.stats = Stats()
        self.faults = FaultPlan()
        self.healthy = True
        self.session: aiohttp.ClientSession | None = None
        self._log = None if config.quiet else sys.stderr
        self._base_headers = {
            INSTANCE_HEADER: config.instance,
            "x-meshbed-service": config.service,
            "x-meshbed-version": config.version,
        }
        sc = config.sidecar
        self._sidecar_base = f"http://{sc.host if ':' not in sc.host else '[' + sc.host + ']'}:{sc.port}" if sc else ""

    # -- lifecycle ---------------------------------------------------------

    def build(self) -> web.Application:
        app = web.Application(client_max_size=MAX_SIZE)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/meshbed/stats", self.get_stats)
        r.add_post("/meshbed/stats/reset", self.reset_stats)
        r.add_post("/meshbed/health", self.set_health)
        r.add_get("/meshbed/fail", self.get_fail)
        r.add_post("/meshbed/fail", self.set_fail)
        r.add_post("/meshbed/register", self.register)
        r.add_post("/meshbed/deregister", self.deregister)
        r.add_get("/meshbed/info", self.info)
        r.add_route("*", r"/bytes/{n:\d+}", self.bytes_handler)
        r.add_route("*", "/{tail:.*}", self.app_handler)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        if self.config.downstreams:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=512, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.config.downstream_timeout),
                auto_decompress=False,
            )

    async def _on_cleanup(self, _app: web.Application) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    # -- app requests ------------------------------------------------------

    async def app_handler(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._answer)

    async def bytes_handler(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, self._bytes)

    async def _serve(
        self,
        request: web.Request,
        produce: Callable[[web.Request, Any, dict[str, int | None]], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        """Count, trace, inject faults, log: the wrapper every app request goes through."""
        t0 = time.perf_counter()
        path = request.path
        headers = request.headers
        self.stats.begin(path)
        result: int | str = 500
        span = self.tracer.start_span(
            f"{request.method} {path}",
            context=tracing.extract(headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.method": request.method,
                "http.target": request.path_qs,
                "http.route": path,
                "meshbed.instance": self.config.instance,
                "guid:x-request-id": headers.get("x-request-id", ""),
            },
        )
        try:
            fault = self.faults.next()
            if fault == "reset":
                result = "reset"
                span.set_attribute("meshbed.fault", "reset")
                span.set_status(Status(StatusCode.ERROR, "injected connection reset"))
                _abort(request)
                raise _Aborted()
            if fault == "5xx":
                span.set_attribute("meshbed.fault", "5xx")
                resp = self._json(503, {
                    "service": self.config.service, "instance": self.config.instance,
                    "error": "injected failure",
                })
            else:
                resp = await self._produce(request, span, produce)
            result = resp.status
            span.set_attribute("http.status_code", resp.status)
            if resp.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return resp
        finally:
            self.stats.end(result)
            span.end()
            if self._log is not None:
                rid = headers.get("x-request-id", "-")
                self._log.write(
                    f"{self.config.instance} {request.method} {request.path_qs} {result} "
                    f"{(time.perf_counter() - t0) * 1000:.1f}ms rid={rid}\n"
                )

    async def _produce(
        self,
        request: web.Request,
        span: Any,
        produce: Callable[[web.Request, Any, dict[str, int | None]], Awaitable[web.Response]],
    ) -> web.Response:
        """Apply the query fault options, then build the real answer."""
        opts: dict[str, int | None] = {}
        if request.query_string:
            try:
                opts = self._fault_options(request.query)
            except BadQuery as exc:
                return self._json(400, {"error": str(exc), "instance": self.config.instance})
        delay = opts.get("delay_ms")
        if delay:
            await asyncio.sleep(delay / 1000.0)
        return await produce(request, span, opts)

    def _fault_options(self, query: Any) -> dict[str, int | None]:
        only = query.get("only")
        if only and only not in (self.config.service, self.config.instance):
            return {}  # the fault options target another hop of the chain
        return {
            "size": _int_option(query, "size", 0, MAX_SIZE),
            "delay_ms": _int_option(query, "delay_ms", 0, 3_600_000),
            "status": _int_option(query, "status", 100, 599),
        }

    async def _answer(self, request: web.Request, span: Any, opts: dict[str, int | None]) -> web.Response:
        results: list[tuple[bool, dict[str, Any]]] = []
        if self.config.downstreams:
            fwd = forwarded_headers(request.headers)
            calls = [self._call(name, request.raw_path, fwd, span) for name in self.config.downstreams]
            results = [await calls[0]] if len(calls) == 1 else list(await asyncio.gather(*calls))
        body: dict[str, Any] = {
            "service": self.config.service,
            "instance": self.config.instance,
            "version": self.config.version,
            "path": request.path,
            "request_id": request.headers.get("x-request-id"),
            "trace_id": tracing.trace_id_hex(span),
            "downstream": [answer for _, answer in results],
        }
        size = opts.get("size")
        if size is not None:
            body["payload"] = payload_bytes(size).decode("ascii")
        status = opts.get("status") or (200 if all(ok for ok, _ in results) else 502)
        return self._json(status, body)

    async def _bytes(self, request: web.Request, span: Any, opts: dict[str, int | None]) -> web.Response:
        n = int(request.match_info["n"])
        if n > MAX_SIZE:
            return self._json(400, {"error": f"size must be <= {MAX_SIZE}"})
        headers = dict(self._base_headers)
        headers["x-meshbed-sha256"] = payload_sha256(n)
        return web.Response(
            status=opts.get("status") or 200, body=payload_bytes(n),
            content_type="application/octet-stream", headers=headers,
        )

    async def _call(self, service: str, raw_path: str, fwd: dict[str, str], parent: Any) -> tuple[bool, dict[str, Any]]:
        """GET the same path from ``service`` via the sidecar; never raises."""
        assert self.session is not None
        url = self._sidecar_base + raw_path
        span = self.tracer.start_span(
            f"GET {service}",
            context=otel_trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes={"http.method": "GET", "http.url": url, "peer.service": service},
        )
        headers = dict(fwd)
        headers["Host"] = service
        tracing.inject(span, headers)
        try:
            async with self.session.get(URL(url, encoded=True), headers=headers) as resp:
                raw = await resp.read()
                status = resp.status
                upstream = resp.headers.get(INSTANCE_HEADER)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            span.end()
            return False, {"service": service, "error": f"{type(exc).__name__}: {exc}".strip(": "), "status": 0}
        span.set_attribute("http.status_code", status)
        data: Any = None
        if raw[:1] == b"{":
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
        if 200 <= status < 300 and isinstance(data, dict):
            span.end()
            return True, data
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
        span.end()
        err: dict[str, Any] = {"service": service, "status": status}
        if isinstance(data, dict):
            err["error"] = str(data.get("error") or f"HTTP {status}")
            err["answer"] = data
        else:
            err["error"] = raw[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
        if upstream:
            err["instance"] = upstream
        return False, err

    def _json(self, status: int, body: Any) -> web.Response:
        return web.Response(status=status, body=_dumps(body), content_type=_JSON, headers=self._base_headers)

    # -- control endpoints -------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return self._json(200 if self.healthy else 503, {"ok": self.healthy})

    async def get_stats(self, request: web.Request) -> web.Response:
        body = {"service": self.config.service, "instance": self.config.instance}
        body.update(self.stats.snapshot())
        return self._json(200, body)

    async def reset_stats(self, request: web.Request) -> web.Response:
        self.stats.reset()
        return self._json(200, {"ok": True})

    async def set_health(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        healthy = data.get("healthy")
        if not isinstance(healthy, bool):
            return self._json(400, {"error": 'expected {"healthy": true|false}'})
        self.healthy = healthy
        return self._json(200, {"ok": True, "healthy": healthy})

    async def get_fail(self, request: web.Request) -> web.Response:
        return self._json(200, self.faults.snapshot())

    async def set_fail(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        mode = data.get("mode", "none")
        ratio = data.get("ratio", 1.0 if mode != "none" else 0.0)
        try:
            self.faults.set(str(mode), float(ratio))
        except (TypeError, ValueError) as exc:
            return self._json(400, {"error": str(exc)})
        return self._json(200, {"ok": True, **self.faults.snapshot()})

    async def register(self, request: web.Request) -> web.Response:
        if self.registrar is None:
            return self._json(409, {"error": "started without --consul"})
        try:
            await self.registrar.register()
        except RegistrationError as exc:
            return self._json(502, {"error": str(exc)})
        return self._json(200, {"ok": True, "registered": True})

    async def deregister(self, request: web.Request) -> web.Response:
        if self.registrar is None:
            return self._json(409, {"error": "started without --consul"})
        await self.registrar.deregister()
        return self._json(200, {"ok": True, "registered": False})

    async def info(self, request: web.Request) -> web.Response:
        c = self.config
        return self._json(200, {
            "service": c.service, "instance": c.instance, "version": c.version,
            "listen": str(c.listen), "advertise": str(c.advertised),
            "downstreams": list(c.downstreams), "sidecar": str(c.sidecar) if c.sidecar else None,
            "consul": c.consul, "otlp": c.otlp, "run_id": c.run_id, "meta": c.meta,
            "healthy": self.healthy, "fail": self.faults.snapshot(),
            "registered": bool(self.registrar and self.registrar.enabled),
        })


class _Aborted(web.HTTPException):
    """Raised after the connection is torn down, so aiohttp writes nothing."""

    status_code = 503


def _abort(request: web.Request) -> None:
    """Close the connection with a TCP RST and no answer, like a crashed upstream."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
