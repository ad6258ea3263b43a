"""The run's docker network and its pods.

- One user-defined bridge network per run, ``meshbed-<run id>``, on a /22 the
  runtime picks in 10.200-254.x.x that overlaps no docker network or host
  route, so every pod gets a *static* IP known before the pod starts (Envoy's
  STATIC clusters and EDS endpoints need IPs, not names). The pod name is also
  a network alias.
- Pods: the app and the sidecar of an instance share one network namespace,
  held by a pause container (``sleep infinity`` in meshbed/base) that owns the
  IP, the alias and the published ports; members join it with
  ``network_mode=container:<pause>``, so killing or restarting a member keeps
  the pod's network. A port the pause container does not publish (the pod's
  ports were not announced up front) gets a forwarder container
  (``meshbed.runtime.forwarder``). Infrastructure pods are their component's
  own container, straight on the network.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from typing import Any, Iterable, Iterator, Mapping, Protocol

from ..errors import ComponentError
from ..images.build import BASE_TAG
from .docker_naming import (SHARED_KINDS, container_name, forwarder_command, forwarder_name, network_name,
                            pause_name, run_labels)
from .state import RunState


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


class RunNetwork:
    """The run's bridge network: created by ``create``, a static IP per pod from ``ip``."""

    def __init__(self, run_id: str, state: RunState | None = None) -> None:
        self.run_id = run_id
        self.state = state
        self.name = network_name(run_id)
        self.net: Any = None  # docker.models.networks.Network, once created
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway: ipaddress.IPv4Address | None = None
        self._api_version = ""
        self._ips: dict[str, str] = {}
        self._hosts: Iterator[str] | None = None
        self._lock = threading.Lock()

    def create(self, client: Any) -> None:
        """Create the network on a free subnet and record it in the run state (retries a lost subnet race)."""
        import docker.errors
        from docker.types import IPAMConfig, IPAMPool
        for _ in range(10):
            taken = list(_host_routes())
            for n in client.networks.list():
                for cfg in (n.attrs.get("IPAM") or {}).get("Config") or []:
                    try:
                        taken.append(ipaddress.IPv4Network(cfg.get("Subnet", ""), strict=False))
                    except ValueError:
                        pass
            subnet = pick_subnet(taken)
            gateway = next(subnet.hosts())
            try:
                net = client.networks.create(
                    self.name, driver="bridge", labels=run_labels(self.run_id), check_duplicate=True,
                    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=str(subnet), gateway=str(gateway))]))
            except docker.errors.APIError as exc:
                if "overlap" in str(exc).lower():
                    continue  # raced another run for the subnet: pick again
                raise ComponentError(f"cannot create docker network {self.name}: {exc}") from exc
            self.net, self.subnet, self.gateway = net, subnet, gateway
            self._api_version = client.api._version
            self._hosts = (str(h) for h in subnet.hosts() if h != gateway)
            if self.state is not None:
                self.state.update(lambda d: d.setdefault("networks", []).append(
                    {"name": self.name, "id": net.id, "subnet": str(subnet)}))
            return
        raise ComponentError(f"cannot create docker network {self.name}: every subnet tried overlapped")

    def ip(self, pod: str) -> str:
        """The pod's static IP (handed out on first ask, the same ever after)."""
        with self._lock:
            if pod not in self._ips:
                if self._hosts is None:
                    raise ComponentError(f"docker network {self.name} does not exist yet",
                                         hint="open the runtime with DockerRuntime.open(run_dir, state)")
                try:
                    self._ips[pod] = next(self._hosts)
                except StopIteration:
                    raise ComponentError(f"the run's network {self.subnet} has no address left for {pod}") from None
            return self._ips[pod]

    def attach(self, alias: str, hostname: str | None = None) -> dict[str, Any]:
        """Container kwargs: on this network at ``ip(alias)``, reachable by the name ``alias``."""
        from docker.types import EndpointConfig
        return {"network": self.name, "hostname": hostname or alias,
                "networking_config": {self.name: EndpointConfig(self._api_version, aliases=[alias],
                                                                ipv4_address=self.ip(alias))}}

    def remove(self) -> None:
        if self.net is not None:
            self.net.remove()


class RunContainer(Protocol):
    def __call__(self, image: str, name: str, command: list[str], *, labels: dict[str, str],
                 placement: dict[str, Any], ports: Iterable[int] = ()) -> Any: ...


class Pod:
    def __init__(self, name: str, holder: Any, published: set[int], shared: bool) -> None:
        self.name = name
        self.holder = holder  # the container whose network namespace the pod uses
        self.published = published
        self.shared = shared  # holder is a pause container
        self.forwarders: list[Any] = []


class Pods:
    """The run's pods by name. Not locked: the runtime calls it under its own lock.

    ``run`` starts a container (the runtime's, which records it); ``images`` is
    the runtime's {kind: tag} map, filled when the runtime opens (forwarders run
    in its ``python`` image).
    """

    def __init__(self, run_id: str, network: RunNetwork, run: RunContainer, images: Mapping[str, str]) -> None:
        self.run_id = run_id
        self.network = network
        self._run = run
        self._images = images
        self._pods: dict[str, Pod] = {}
        self.extra: list[Any] = []  # pause and forwarder containers

    def prepare(self, pod: str, ports: Iterable[int]) -> None:
        """Create the pod's pause container publishing every port its members will use."""
        if pod not in self._pods:
            self._pods[pod] = self._pause(pod, set(ports))

    def member(self, pod_name: str, kind: str, ports: set[int]) -> dict[str, Any] | None:
        """Placement of a member about to start in a shared pod (joining its holder), forwarding any
        port the pod does not publish yet; None when the member is its pod's own container."""
        pod = self._pods.get(pod_name)
        if pod is None and kind in SHARED_KINDS:
            pod = self._pods[pod_name] = self._pause(pod_name, ports)
        if pod is None or not pod.shared:
            return None
        for p in sorted(ports - pod.published):
            self._forward(pod, p)
        return {"network_mode": f"container:{pod.holder.id}"}

    def adopt(self, pod_name: str, container: Any, ports: set[int]) -> None:
        """Record a component's own container as its (unshared) pod."""
        if pod_name not in self._pods:
            self._pods[pod_name] = Pod(pod_name, container, ports, shared=False)

    def discard(self, pod: str) -> list[Any]:
        """Forget ``pod``; return its containers (holder, forwarders) for the caller to remove."""
        p = self._pods.pop(pod, None)
        if p is None:
            return []
        out = [*p.forwarders, p.holder]
        for c in out:
            if c in self.extra:
                self.extra.remove(c)
        return out

    def clear(self) -> None:
        self._pods.clear()
        self.extra.clear()

    def _pause(self, pod: str, ports: set[int]) -> Pod:
        component = pause_name(pod)
        c = self._run(BASE_TAG, container_name(self.run_id, component), ["sleep", "infinity"],
                      labels=run_labels(self.run_id, pod=pod, component=component), ports=sorted(ports),
                      placement=self.network.attach(pod, hostname=pod))
        self.extra.append(c)
        return Pod(pod, c, set(ports), shared=True)

    def _forward(self, pod: Pod, port: int) -> None:
        """Fallback when the pod's ports were not known up front: publish one more port via a forwarder."""
        key = forwarder_name(pod.name, port)
        c = self._run(self._images["python"], container_name(self.run_id, key),
                      forwarder_command(port, self.network.ip(pod.name), port),
                      labels=run_labels(self.run_id, pod=pod.name, component=key), ports=[port],
                      placement=self.network.attach(key))
        self.extra.append(c)
        pod.forwarders.append(c)
        pod.published.add(port)
