"""Local Docker images for the docker runtime, built without any registry.

Images (each labelled meshbed=1 and meshbed.inputs=<hash of its inputs>; a
build is skipped when an image with that tag already carries that hash):

  meshbed/base:bookworm           debootstrap --variant=minbase bookworm (+python3, ca-certificates)
  meshbed/envoy:<envoy version>   base + the Envoy ELF at /usr/local/bin/envoy
  meshbed/consul:<version>        base + /usr/local/bin/consul
  meshbed/jaeger:<version>        base + /usr/local/bin/jaeger
  meshbed/toxiproxy:<version>     base + /usr/local/bin/toxiproxy
  meshbed/pydeps:<hash12>         base + meshbed's third-party Python deps (from the host venv)
  meshbed/python:<meshbed ver>-<hash12>   pydeps + the meshbed package (sample, control plane)

The binaries are the same files the process runtime runs (provision.find_binary).
"""

from .build import (
    BASE_TAG,
    IN_IMAGE_BIN,
    IN_IMAGE_PYTHON,
    ImageSpec,
    ensure_images,
    image_for,
)

__all__ = ["BASE_TAG", "IN_IMAGE_BIN", "IN_IMAGE_PYTHON", "ImageSpec", "ensure_images", "image_for"]
