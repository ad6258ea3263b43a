"""What the docker runtime calls things, and how a component's command runs (pure, unit-tested).

Every container and the network carry ``meshbed=1`` and ``meshbed.run=<run id>``
(plus ``meshbed.pod`` and ``meshbed.component`` on containers): the labels the
sweeper and ``docker ps --filter`` select a run by.
"""

from __future__ import annotations

from typing import Iterable

LABEL = "meshbed"
LABEL_RUN = "meshbed.run"
LABEL_COMPONENT = "meshbed.component"
LABEL_POD = "meshbed.pod"
SHARED_KINDS = ("app", "envoy")  # kinds whose pods get a pause container
# appends the component's output to its log file, then becomes the component (exec)
LOG_WRAPPER = 'exec "$0" "$@" >>"$MESHBED_LOG" 2>&1'
# the fallback port forwarder (meshbed/runtime/forwarder.py), run by the python image
FORWARDER_MODULE = "meshbed.runtime.forwarder"


def run_labels(run_id: str, **extra: str) -> dict[str, str]:
    labels = {LABEL: "1", LABEL_RUN: run_id}
    labels.update({f"meshbed.{k}": v for k, v in extra.items()})
    return labels


def container_name(run_id: str, name: str) -> str:
    return f"meshbed-{run_id}-{name}"


def network_name(run_id: str) -> str:
    return f"meshbed-{run_id}"


def pause_name(pod: str) -> str:
    """The component name of a pod's pause container."""
    return f"pod-{pod}"


def forwarder_name(pod: str, port: int) -> str:
    """The component name of a forwarder container publishing one more port of a pod."""
    return f"fwd-{pod}-{port}"


def map_argv(kind: str, argv: list[str]) -> tuple[str, list[str]]:
    """(image key, argv inside the image) for a spec's host argv."""
    from ..images import image_for
    key, exe = image_for(kind, argv[0])
    return key, [exe, *argv[1:]]


def wrap_command(argv: list[str]) -> list[str]:
    return ["/bin/sh", "-c", LOG_WRAPPER, *argv]


def forwarder_command(listen_port: int, target_host: str, target_port: int) -> list[str]:
    """The forwarder container's command (python3 is on PATH in meshbed/python)."""
    return ["python3", "-m", FORWARDER_MODULE, str(listen_port), target_host, str(target_port)]


def port_bindings(ports: Iterable[int]) -> dict[str, tuple[str, int]]:
    """Publish each port on 127.0.0.1 under the same number."""
    return {f"{p}/tcp": ("127.0.0.1", int(p)) for p in ports}
