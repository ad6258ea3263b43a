"""The docker runtime: every component in a container (testcontainers + the docker SDK).

Design (docs/docker.md has the long form):

- One user-defined bridge network per run, ``meshbed-<run id>``, with a subnet
  the runtime picks, so every pod gets a *static* IP that is known before the
  pod starts: ``internal_host(pod)`` returns it. (Envoy's STATIC clusters and
  EDS endpoints need IP addresses, not names; each pod is also reachable by its
  name as a network alias.)
- Pods: the app and the sidecar of an instance share one network namespace.
  A small "pause" container (``sleep infinity`` in meshbed/base) holds the
  namespace, the IP, the alias and the published ports; members join it with
  ``network_mode=container:<pause>``, so killing or restarting a member never
  loses the pod's network. ``prepare_pod(pod, ports)`` (called by the mesh
  before the first member starts) publishes every port of the pod at once;
  without it the pause container publishes the first member's ports and a
  later member's ports are forwarded by a tiny TCP-forwarder container.
  Infrastructure (consul, jaeger, toxiproxy, control plane) runs as one
  container per pod, straight on the network.
- Every port is published on 127.0.0.1 with the same host port number; inside
  containers components bind 0.0.0.0 (``listen_host()``).
- The run directory is bind-mounted at the same path in every container, so
  spec files, relative argv paths and absolute host paths under it (Envoy
  access logs) work unchanged; each component appends its stdout+stderr to
  ``<run_dir>/<name>/<name>.log`` itself, so ``log_tail`` works and logs
  survive a dead supervisor.
- argv[0] (a host path) maps to an image and an in-image path by
  ``meshbed.images.image_for``: python* -> meshbed/python's /usr/bin/python3,
  envoy/consul/jaeger/toxiproxy -> /usr/local/bin/<kind> in meshbed/<kind>.
- Every container and the network carry ``meshbed=1`` and
  ``meshbed.run=<run id>``; ids are recorded in RunState.data["containers"] /
  ["networks"], and a sweeper in EXTRA_SWEEPERS removes a run's leftovers by
  label (Ryuk is disabled: it cannot be pulled here).
"""

from __future__ import annotations

import ipaddress
import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

from ..errors import ComponentError  # noqa: E402
from ..images.build import BASE_TAG  # noqa: E402
from .base import ComponentSpec, Handle, Runtime, register_runtime, stop_in_order  # noqa: E402
from .state import EXTRA_SWEEPERS, RunState  # noqa: E402

LABEL = "meshbed"
LABEL_RUN = "meshbed.run"
LABEL_COMPONENT = "meshbed.component"
LABEL_POD = "meshbed.pod"
SHARED_KINDS = ("app", "envoy")  # kinds whose pods get a pause container
# appends the component's output to its log file, then becomes the component (exec)
LOG_WRAPPER = 'exec "$0" "$@" >>"$MESHBED_LOG" 2>&1'
FORWARDER = r"""
import asyncio, sys
lp, th, tp = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
async def pipe(r, w):
    try:
        while True:
            d = await r.read(65536)
            if not d:
                break
            w.write(d)
            await w.drain()
    except Exception:
        pass
    finally:
        try:
            w.close()
        except Exception:
            pass
async def handle(r, w):
    try:
        r2, w2 = await asyncio.open_connection(th, tp)
    except Exception:
        w.close()
        return
    await asyncio.gather(pipe(r, w2), pipe(r2, w))
async def main():
    srv = await asyncio.start_server(handle, "0.0.0.0", lp)
    async with srv:
        await srv.serve_forever()
asyncio.run(main())
"""
ENGINE_HINT = "start dockerd (sudo dockerd > /var/log/dockerd.log 2>&1 &) or set DOCKER_HOST"


# -- pure helpers (unit-tested) -------------------------------------------------

def run_labels(run_id: str, **extra: str) -> dict[str, str]:
    labels = {LABEL: "1", LABEL_RUN: run_id}
    labels.update({f"meshbed.{k}": v for k, v in extra.items()})
    return labels


def container_name(run_id: str, name: str) -> str:
    return f"meshbed-{run_id}-{name}"


def network_name(run_id: str) -> str:
    return f"meshbed-{run_id}"


def map_argv(kind: str, argv: list[str]) -> tuple[str, list[str]]:
    """(image key, argv inside the image) for a spec's host argv."""
    from ..images import image_for
    key, exe = image_for(kind, argv[0])
    return key, [exe, *argv[1:]]


def wrap_command(argv: list[str]) -> list[str]:
    return ["/bin/sh", "-c", LOG_WRAPPER, *argv]


def port_bindings(ports: Iterable[int]) -> dict[str, tuple[str, int]]:
    """Publish each port on 127.0.0.1 under the same number."""
    return {f"{p}/tcp": ("127.0.0.1", int(p)) for p in ports}


def _host_routes() -> list[ipaddress.IPv4Network]:
    out = []
    try:
        with open("/proc/net/route") as fh:
            next(fh)
            for line in fh:
                f = line.split()
                dest, mask = int(f[1], 16), int(f[7], 16)
                if dest == 0:
                    continue
                net = ipaddress.IPv4Network((ipaddress.IPv4Address(dest.to_bytes(4, "little")),
                                             bin(mask).count("1")), strict=False)
                out.append(net)
    except (OSError, ValueError, StopIteration):
        pass
    return out


def pick_subnet(taken: Iterable[ipaddress.IPv4Network], rng: random.Random | None = None) -> ipaddress.IPv4Network:
    """A /22 in 10.200.0.0-10.254.255.255 that overlaps no taken network."""
    rng = rng or random.Random()
    taken = list(taken)
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{rng.randint(200, 254)}.{rng.randrange(0, 256, 4)}.0/22")
        if not any(net.overlaps(t) for t in taken):
            return net
    raise ComponentError("no free /22 subnet for the run's docker network in 10.200-254.x.x",
                         hint="remove unused docker networks (`docker network prune`)")


# -- the engine -------------------------------------------------------------------

def client(timeout: int = 60) -> Any:
    """A docker SDK client, or a ComponentError saying how to get an engine."""
    try:
        import docker
    except ImportError as exc:
        raise ComponentError("the docker runtime needs the docker SDK and testcontainers",
                             hint="pip install 'meshbed[docker]'") from exc
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine"
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise ComponentError(f"docker: engine not reachable at {where}: {type(exc).__name__}", hint=ENGINE_HINT) from exc
    return c


def engine_status() -> tuple[bool, str]:
    """(usable, one line) for `meshbed doctor`."""
    try:
        c = client(timeout=5)
    except ComponentError as exc:
        return False, str(exc)
    try:
        v = c.version()
        return True, f"docker engine {v.get('Version', '?')} (API {v.get('ApiVersion', '?')})"
    except Exception as exc:  # noqa: BLE001
        return False, f"docker: engine answered ping but not version: {exc}"
    finally:
        c.close()


# -- handles ------------------------------------------------------------------------

class DockerHandle(Handle):
    def __init__(self, rt: "DockerRuntime", spec: ComponentSpec, image: str, command: list[str]) -> None:
        self.spec = spec
        self._rt = rt
        self._image = image
        self._command = command
        self.workdir = rt.run_dir / spec.name
        self.container: Any = None  # docker.models.containers.Container
        self._lock = threading.RLock()

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.spec.name}.log"

    def _write_files(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for rel, content in self.spec.files.items():
            (self.workdir / rel).write_text(content)
        with open(self.log_path, "ab") as log:
            log.write(f"--- meshbed: starting {self.spec.name} at {time.strftime('%H:%M:%S')} in {self._image}: "
                      f"{' '.join(self._command)}\n".encode())

    def _launch(self) -> None:
        self._write_files()
        if self.container is not None:  # restart: same container, same config
            self.container.start()
            return
        self.container = self._rt._create(self)

    def _status(self) -> str:
        if self.container is None:
            return "missing"
        try:
            self.container.reload()
        except Exception:  # noqa: BLE001 - removed or engine gone: not alive
            return "missing"
        return str(self.container.status)

    def alive(self) -> bool:
        return self._status() in ("running", "paused")

    @property
    def pid(self) -> int | None:
        """Host PID of the container's init (changes when the component restarts)."""
        if self._status() in ("running", "paused"):
            return int(self.container.attrs["State"]["Pid"]) or None
        return None

    @property
    def exit_code(self) -> int | None:
        if self._status() in ("exited", "dead"):
            return int(self.container.attrs["State"]["ExitCode"])
        return None

    def stop(self, timeout: float | None = None) -> None:
        with self._lock:
            st = self._status()
            if st == "paused":
                self.container.unpause()  # a frozen process cannot act on SIGTERM
            if st in ("running", "paused", "restarting"):
                t = self.spec.stop_timeout if timeout is None else timeout
                self.container.stop(timeout=max(1, int(round(t))))

    def kill(self) -> None:
        with self._lock:
            if self._status() in ("running", "paused"):
                try:
                    self.container.kill()
                except Exception:  # noqa: BLE001 - it died on its own meanwhile
                    pass
                self.container.wait(timeout=10)

    def pause(self) -> None:
        if self._status() == "running":
            self.container.pause()

    def resume(self) -> None:
        if self._status() == "paused":
            self.container.unpause()

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d["container"] = self.container.name if self.container is not None else None
        d["pid"] = self.pid
        d["image"] = self._image
        d["ip"] = self._rt.internal_host(self.spec.pod or self.spec.name)
        return d


class _Pod:
    def __init__(self, name: str, holder: Any, published: set[int], shared: bool) -> None:
        self.name = name
        self.holder = holder  # the container whose network namespace the pod uses
        self.published = published
        self.shared = shared  # holder is a pause container
        self.forwarders: list[Any] = []


@register_runtime("docker")
class DockerRuntime(Runtime):
    def __init__(self, run_dir: Path, state: RunState | None = None,
                 progress: Any = lambda s: print(f"meshbed docker: {s}", file=sys.stderr, flush=True)) -> None:
        super().__init__(run_dir)
        from testcontainers.core.config import testcontainers_config
        testcontainers_config.ryuk_disabled = True  # Ryuk cannot be pulled here; we sweep by label
        self.state = state
        self.run_id = state.run_id if state is not None else run_dir.name
        self.client = client()
        from ..images import ensure_images
        self.images = ensure_images(self.client, progress)
        self.handles: list[DockerHandle] = []
        self._pods: dict[str, _Pod] = {}
        self._extra: list[Any] = []  # pause + forwarder containers
        self._ips: dict[str, str] = {}
        self._lock = threading.RLock()
        self.network = self._create_network()
        self._hosts = (str(h) for h in self.subnet.hosts() if h != self.gateway)

    # -- network and addresses --------------------------------------------------

    def _create_network(self) -> Any:
        import docker.errors
        from docker.types import IPAMConfig, IPAMPool
        name = network_name(self.run_id)
        for _ in range(10):
            taken = list(_host_routes())
            for n in self.client.networks.list():
                for cfg in (n.attrs.get("IPAM") or {}).get("Config") or []:
                    try:
                        taken.append(ipaddress.IPv4Network(cfg.get("Subnet", ""), strict=False))
                    except ValueError:
                        pass
            subnet = pick_subnet(taken)
            gateway = next(subnet.hosts())
            try:
                net = self.client.networks.create(
                    name, driver="bridge", labels=run_labels(self.run_id), check_duplicate=True,
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(gateway))]))
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():
                    continue  # raced another run for the subnet: pick again
                raise ComponentError(f"cannot create docker network {name}: {exc}") from exc
            self.subnet, self.gateway = subnet, gateway
            if self.state is not None:
                self.state.update(lambda d: d.setdefault("networks", []).append(
                    {"name": name, "id": net.id, "subnet": str(subnet)}))
            return net
        raise ComponentError(f"cannot create docker network {name}: every subnet tried overlapped")

    def listen_host(self) -> str:
        return "0.0.0.0"

    def internal_host(self, pod: str) -> str:
        with self._lock:
            if pod not in self._ips:
                try:
                    self._ips[pod] = next(self._hosts)
                except StopIteration:
                    raise ComponentError(f"the run's network {self.subnet} has no address left for {pod}") from None
            return self._ips[pod]

    # -- containers --------------------------------------------------------------

    def _record(self, c: Any, component: str) -> None:
        if self.state is not None:
            self.state.update(lambda d: d.setdefault("containers", []).append(
                {"name": c.name, "id": c.id, "component": component}))

    def _container(self, image: str, name: str, command: list[str], *, labels: dict[str, str],
                   ports: Iterable[int] = (), ip_of: str | None = None, join: Any = None,
                   env: dict[str, str] | None = None, workdir: Path | None = None, hostname: str | None = None) -> Any:
        """Create and start one container through testcontainers' DockerContainer."""
        from docker.types import EndpointConfig
        from testcontainers.core.container import DockerContainer
        dc = DockerContainer(image, command=command, name=name, env=dict(env or {}))
        # with_bind_ports cannot say 127.0.0.1: hand the SDK its (host ip, port) form directly
        dc.ports.update(port_bindings(ports))  # type: ignore[arg-type]
        dc.with_volume_mapping(str(self.run_dir), str(self.run_dir), "rw")
        kwargs: dict[str, Any] = {"labels": labels, "init": True, "user": f"{os.getuid()}:{os.getgid()}"}
        if workdir is not None:
            kwargs["working_dir"] = str(workdir)
        if join is not None:
            kwargs["network_mode"] = f"container:{join.id}"
        else:
            assert ip_of is not None
            net = self.network.name
            kwargs["network"] = net
            kwargs["hostname"] = hostname or ip_of
            kwargs["networking_config"] = {net: EndpointConfig(
                self.client.api._version, aliases=[ip_of], ipv4_address=self.internal_host(ip_of))}
        dc.with_kwargs(**kwargs)
        try:
            dc.start()
        except Exception as exc:  # noqa: BLE001 - surface as a component error
            c = getattr(dc, "_container", None)
            if c is not None:
                self._extra.append(c)  # created but not started: close() removes it
            raise ComponentError(f"cannot start container {name} ({image}): {exc}",
                                 hint="`docker ps -a --filter label=meshbed.run` shows the run's containers") from exc
        c = dc.get_wrapped_container()
        self._record(c, labels.get(LABEL_COMPONENT, name))
        return c

    @classmethod
    def preflight(cls) -> None:
        client(timeout=10)

    def discard(self, pod: str, handles: list[Handle]) -> None:
        """Remove a scaled-down pod's containers (members, pause, forwarders) and forget the pod."""
        with self._lock:
            for h in handles:
                if h in self.handles:
                    self.handles.remove(h)  # type: ignore[arg-type]
                c = getattr(h, "container", None)
                if c is not None:
                    _remove(c)
            p = self._pods.pop(pod, None)
            if p is not None:
                for c in [*p.forwarders, p.holder]:
                    if c in self._extra:
                        self._extra.remove(c)
                    _remove(c)

    def prepare_pod(self, pod: str, ports: Iterable[int]) -> None:
        """Create the pod's pause container publishing every port its members will use."""
        with self._lock:
            if pod not in self._pods:
                self._pods[pod] = self._pause(pod, set(ports))

    def _pause(self, pod: str, ports: set[int]) -> _Pod:
        c = self._container(BASE_TAG, container_name(self.run_id, f"pod-{pod}"),
                            ["sleep", "infinity"], labels=run_labels(self.run_id, pod=pod, component=f"pod-{pod}"),
                            ports=sorted(ports), ip_of=pod, hostname=pod)
        self._extra.append(c)
        return _Pod(pod, c, set(ports), shared=True)

    def _forward(self, pod: _Pod, port: int) -> None:
        """Fallback when the pod's ports were not known up front: publish one more port via a forwarder."""
        key = f"fwd-{pod.name}-{port}"
        c = self._container(self.images["python"], container_name(self.run_id, key),
                            ["python3", "-c", FORWARDER, str(port), self.internal_host(pod.name), str(port)],
                            labels=run_labels(self.run_id, pod=pod.name, component=key), ports=[port], ip_of=key)
        self._extra.append(c)
        pod.forwarders.append(c)
        pod.published.add(port)

    def _create(self, h: DockerHandle) -> Any:
        spec = h.spec
        pod_name = spec.pod or spec.name
        env = dict(spec.env)
        env.update(MESHBED_LOG=str(h.log_path), MESHBED_CHECK_HOST=self.internal_host(pod_name),
                   MESHBED_RUN_ID=self.run_id, HOME="/tmp")
        labels = run_labels(self.run_id, pod=pod_name, component=spec.name)
        name = container_name(self.run_id, spec.name)
        ports = set(spec.ports.values())
        with self._lock:
            pod = self._pods.get(pod_name)
            if pod is None and spec.kind in SHARED_KINDS:
                pod = self._pods[pod_name] = self._pause(pod_name, ports)
            if pod is not None and pod.shared:
                for p in sorted(ports - pod.published):
                    self._forward(pod, p)
                return self._container(self._image_of(h), name, h._command, labels=labels, join=pod.holder,
                                       env=env, workdir=h.workdir)
            c = self._container(self._image_of(h), name, h._command, labels=labels, ports=ports, ip_of=pod_name,
                                env=env, workdir=h.workdir, hostname=pod_name)
            if pod is None:
                self._pods[pod_name] = _Pod(pod_name, c, ports, shared=False)
            return c

    def _image_of(self, h: DockerHandle) -> str:
        return h._image

    def start(self, spec: ComponentSpec) -> DockerHandle:
        key, argv = map_argv(spec.kind, spec.argv)
        h = DockerHandle(self, spec, self.images[key], wrap_command(argv))
        self.handles.append(h)  # registered before the side effect: close() covers a failed start
        h._launch()
        return h

    # -- teardown ----------------------------------------------------------------

    def close(self) -> None:
        errors = stop_in_order(list(self.handles), max_workers=8)
        with ThreadPoolExecutor(max_workers=8) as pool:
            containers = [h.container for h in self.handles if h.container is not None] + self._extra
            list(pool.map(_remove, containers))
        self.handles.clear()
        self._extra.clear()
        self._pods.clear()
        try:
            self.network.remove()
        except Exception as exc:  # noqa: BLE001 - the sweep below retries
            errors.append(f"network {self.network.name}: {exc}")
        swept = sweep_docker_run(self.run_id, self.client)  # anything created but never tracked
        if self.state is not None:
            self.state.update(lambda d: d.update(containers=[], networks=[]))
        self.client.close()
        if swept:
            errors.append(f"swept untracked {', '.join(swept)}")
        if errors:
            raise ComponentError("some containers did not stop cleanly: " + "; ".join(errors))


def _remove(c: Any) -> None:
    try:
        c.remove(force=True, v=True)
    except Exception:  # noqa: BLE001 - already gone
        pass


def sweep_docker_run(run_id: str, c: Any) -> list[str]:
    """Remove every container and network labelled with ``run_id``; return what was removed."""
    removed: list[str] = []
    flt = {"label": f"{LABEL_RUN}={run_id}"}
    for ct in c.containers.list(all=True, filters=flt):
        _remove(ct)
        removed.append(ct.name)
    for net in c.networks.list(filters=flt):
        try:
            net.remove()
            removed.append(f"network {net.name}")
        except Exception:  # noqa: BLE001
            pass
    return removed


def _sweeper(state: RunState) -> list[str]:
    d = state.data
    if d.get("runtime") != "docker" and not d.get("containers") and not d.get("networks"):
        return []
    try:
        c = client(timeout=20)
    except ComponentError:
        return []
    try:
        swept = sweep_docker_run(state.run_id, c)
    finally:
        c.close()
    state.update(lambda dd: dd.update(containers=[], networks=[]))
    return swept


if _sweeper not in EXTRA_SWEEPERS:
    EXTRA_SWEEPERS.append(_sweeper)
