"""Build (or find, cached) the local images the docker runtime runs.

Every image carries the label ``meshbed.inputs=<sha256 of its inputs>``; a
build happens only when the tag is missing or its label differs. Inputs are
content hashes (binaries, meshbed's sources, the dependency list), the parent
image's id and the recipe version, so a changed input rebuilds exactly the
images above it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from .. import __version__
from ..errors import ComponentError

Progress = Callable[[str], None]

RECIPE = "1"  # bump to force a rebuild of every image after a recipe change
SUITE = "bookworm"
BASE_TAG = f"meshbed/base:{SUITE}"
BASE_INCLUDE = ("python3", "ca-certificates", "procps")
IN_IMAGE_BIN = "/usr/local/bin"  # consul, jaeger, toxiproxy, envoy live here
IN_IMAGE_PYTHON = "/usr/bin/python3"  # Debian bookworm's Python 3.11
DIST_PACKAGES = "usr/local/lib/python3.11/dist-packages"  # a site dir of Debian's python3
LABEL_INPUTS = "meshbed.inputs"
BINARY_KINDS = ("envoy", "consul", "jaeger", "toxiproxy")


def inputs_hash(inputs: Any) -> str:
    """A stable sha256 of a JSON-able description of an image's inputs."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


# -- content digests (cached by stat, so a 120 MB Envoy is hashed once) ----------

def _digest_cache_path() -> Path:
    from ..provision.binaries import cache_dir
    return cache_dir() / "docker" / "digests.json"


_DIGESTS: dict[str, str] | None = None


def file_digest(path: Path) -> str:
    global _DIGESTS
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    if _DIGESTS is None:
        try:
            _DIGESTS = json.loads(_digest_cache_path().read_text())
        except (OSError, ValueError):
            _DIGESTS = {}
    if key in _DIGESTS:
        return _DIGESTS[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    _DIGESTS[key] = h.hexdigest()
    try:
        p = _digest_cache_path()
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(_DIGESTS))
        tmp.replace(p)
    except OSError:
        pass
    return _DIGESTS[key]


# -- what goes into the Python image ------------------------------------------------

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str | None:
    """The distribution a requirement string names, or None if it only applies to an extra."""
    spec, _, marker = req.partition(";")
    if "extra" in marker:
        return None
    if marker.strip():
        try:
            from packaging.markers import Marker
            if not Marker(marker.strip()).evaluate():
                return None
        except Exception:  # noqa: BLE001 - no packaging: keep the requirement
            pass
    m = _NAME_RE.match(spec)
    return _norm(m.group(1)) if m else None


# meshbed's own requirements the containers never import: pytest drives `meshbed run` on the host
NOT_IN_IMAGES = frozenset({"pytest"})


def dependency_closure(root: str = "meshbed") -> list[importlib.metadata.Distribution]:
    """Every installed distribution ``root`` needs at run time in a container (not itself), sorted by name."""
    seen: dict[str, importlib.metadata.Distribution] = {}
    todo = [n for n in (_requirement_name(r) for r in importlib.metadata.requires(root) or [])
            if n and n not in NOT_IN_IMAGES]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        seen[name] = dist
        todo += [n for n in (_requirement_name(r) for r in dist.requires or []) if n and n not in seen]
    return [seen[k] for k in sorted(seen)]


def _skip_dep_file(rel: str) -> bool:
    # Envoy's ELF (120 MB) lives in the envoy image; scripts outside site-packages are not needed
    return (rel.startswith("..") or "__pycache__" in rel or rel.endswith(".pyc")
            or rel.startswith("envoy/_bin/"))


def dep_files(dists: Iterable[importlib.metadata.Distribution]) -> list[tuple[str, Path]]:
    """(path relative to site-packages, host path) of every file the Python image gets."""
    out: dict[str, Path] = {}
    for d in dists:
        for f in d.files or []:
            rel = str(f).replace("\\", "/")
            if _skip_dep_file(rel):
                continue
            p = Path(f.locate())
            if p.is_file():
                out[rel] = p
    return sorted(out.items())


def meshbed_files() -> list[tuple[str, Path]]:
    """meshbed's own package (works for an editable checkout) plus the Envoy templates."""
    import meshbed
    from ..components.envoy_templates import templates_dir
    pkg = Path(meshbed.__file__).resolve().parent
    out = []
    for p in sorted(pkg.rglob("*")):
        rel = p.relative_to(pkg).as_posix()
        if p.is_file() and "__pycache__" not in rel and not rel.endswith(".pyc") and not rel.startswith("_templates/"):
            out.append((f"meshbed/{rel}", p))
    tdir = templates_dir()
    for p in sorted(tdir.rglob("*")):
        if p.is_file():
            out.append((f"meshbed/_templates/envoy/{p.relative_to(tdir).as_posix()}", p))
    return out


# -- image specs ---------------------------------------------------------------

@dataclass
class ImageSpec:
    tag: str
    inputs: dict[str, Any]
    parent: str | None  # tag of the image this one is built FROM
    files: list[tuple[str, Path]] = field(default_factory=list)  # (path in image, host path)
    extra: dict[str, bytes] = field(default_factory=dict)  # (path in image -> content)

    @property
    def digest(self) -> str:
        return inputs_hash(self.inputs)


def base_spec() -> ImageSpec:
    return ImageSpec(BASE_TAG, {"recipe": RECIPE, "suite": SUITE, "variant": "minbase",
                                "include": sorted(BASE_INCLUDE)}, parent=None)


def binary_spec(kind: str, path: Path, version: str, parent_id: str) -> ImageSpec:
    return ImageSpec(f"meshbed/{kind}:{version}",
                     {"recipe": RECIPE, "parent": parent_id, "kind": kind, "version": version,
                      "sha256": file_digest(path)},
                     parent=BASE_TAG, files=[(f"{IN_IMAGE_BIN}/{kind}".lstrip("/"), path)])


def pydeps_spec(parent_id: str) -> ImageSpec:
    dists = dependency_closure()
    pins = [f"{_norm(d.metadata['Name'])}=={d.version}" for d in dists]
    inputs = {"recipe": RECIPE, "parent": parent_id, "python": "3.11", "deps": pins}
    h = inputs_hash(inputs)[:12]
    files = [(f"{DIST_PACKAGES}/{rel}", p) for rel, p in dep_files(dists)]
    return ImageSpec(f"meshbed/pydeps:{h}", inputs, parent=BASE_TAG, files=files)


def python_spec(pydeps_tag: str, parent_id: str) -> ImageSpec:
    files = meshbed_files()
    inputs = {"recipe": RECIPE, "parent": parent_id, "version": __version__,
              "files": [(rel, file_digest(p)) for rel, p in files]}
    h = inputs_hash(inputs)[:12]
    meta = f"Metadata-Version: 2.1\nName: meshbed\nVersion: {__version__}\n".encode()
    return ImageSpec(f"meshbed/python:{__version__}-{h}", inputs, parent=pydeps_tag,
                     files=[(f"{DIST_PACKAGES}/{rel}", p) for rel, p in files],
                     extra={f"{DIST_PACKAGES}/meshbed-{__version__}.dist-info/METADATA": meta})


# -- building ------------------------------------------------------------------

def _image(client: Any, tag: str) -> Any | None:
    import docker.errors
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _current(client: Any, spec: ImageSpec) -> Any | None:
    img = _image(client, spec.tag)
    if img is not None and (img.labels or {}).get(LABEL_INPUTS) == spec.digest:
        return img
    return None


def _build_base(client: Any, spec: ImageSpec, progress: Progress) -> None:
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise ComponentError("cannot build meshbed/base: debootstrap is not installed",
                             hint="apt-get install -y debootstrap (needs root), then `meshbed provision --docker`")
    mirror = os.environ.get("MESHBED_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(prefix="meshbed-rootfs-") as tmp:
        root = Path(tmp) / "root"
        progress(f"building {spec.tag}: debootstrap --variant=minbase {SUITE} (about a minute) ...")
        cmd = [debootstrap, "--variant=minbase", f"--include={','.join(BASE_INCLUDE)}", SUITE, str(root), mirror]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as exc:
            raise ComponentError("debootstrap took over 15 minutes", hint=f"check access to {mirror}") from exc
        if out.returncode != 0:
            tail = " | ".join((out.stdout + out.stderr).strip().splitlines()[-3:])
            raise ComponentError(f"debootstrap failed (exit {out.returncode}): {tail}",
                                 hint=f"needs root and access to {mirror} (set MESHBED_DEBIAN_MIRROR)")
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
        tarpath = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-c", "-f", str(tarpath), "."], check=True, timeout=300)
        repo, _, tag = spec.tag.partition(":")
        client.api.import_image_from_file(str(tarpath), repository=repo, tag=tag,
                                          changes=["LABEL meshbed=1", f"LABEL {LABEL_INPUTS}={spec.digest}",
                                                   'CMD ["/bin/bash"]'])


def _add(tar: tarfile.TarFile, arc: str, path: Path) -> None:
    st = path.stat()  # follows symlinks: the image gets the file itself
    ti = tarfile.TarInfo(arc)
    ti.size, ti.mode, ti.mtime = st.st_size, st.st_mode & 0o777, int(st.st_mtime)
    with open(path, "rb") as fh:
        tar.addfile(ti, fh)


def _build_layered(client: Any, spec: ImageSpec, progress: Progress) -> None:
    import docker.errors
    assert spec.parent
    dockerfile = f"FROM {spec.parent}\nCOPY rootfs/ /\n".encode()
    with tempfile.TemporaryFile(prefix="meshbed-ctx-") as ctx:
        with tarfile.open(fileobj=ctx, mode="w") as tar:
            ti = tarfile.TarInfo("Dockerfile")
            ti.size = len(dockerfile)
            tar.addfile(ti, io.BytesIO(dockerfile))
            for arc, path in spec.files:
                _add(tar, f"rootfs/{arc}", path)
            for arc, content in spec.extra.items():
                ti = tarfile.TarInfo(f"rootfs/{arc}")
                ti.size, ti.mode = len(content), 0o644
                tar.addfile(ti, io.BytesIO(content))
        ctx.seek(0)
        try:
            client.images.build(fileobj=ctx, custom_context=True, tag=spec.tag, rm=True, forcerm=True,
                                pull=False, labels={"meshbed": "1", LABEL_INPUTS: spec.digest})
        except docker.errors.BuildError as exc:
            tail = " | ".join(str(x.get("stream", x.get("error", ""))).strip() for x in list(exc.build_log)[-3:])
            raise ComponentError(f"building {spec.tag} failed: {exc}: {tail}",
                                 hint="`meshbed provision --docker` rebuilds; see `docker images meshbed/*`") from exc


def _prune_siblings(client: Any, tag: str) -> None:
    """Hash-tagged repos (pydeps, python) would grow with every source edit: drop older tags."""
    repo = tag.partition(":")[0]
    if repo not in ("meshbed/pydeps", "meshbed/python"):
        return
    for img in client.images.list(name=repo):
        for t in img.tags:
            if t != tag:
                try:
                    client.images.remove(t)
                except Exception:  # noqa: BLE001 - in use by a running mesh, or a child image: keep it
                    pass


def _ensure(client: Any, spec: ImageSpec, progress: Progress) -> str:
    img = _current(client, spec)
    if img is None:
        start = time.monotonic()
        if spec.parent is None:
            _build_base(client, spec, progress)
        else:
            progress(f"building image {spec.tag} ...")
            _build_layered(client, spec, progress)
        progress(f"built {spec.tag} in {time.monotonic() - start:.1f}s")
        _prune_siblings(client, spec.tag)
        img = _current(client, spec)
        if img is None:
            raise ComponentError(f"image {spec.tag} was built but does not carry its inputs label")
    return str(img.id)


def ensure_images(client: Any, progress: Progress = lambda s: print(s, file=sys.stderr),
                  binaries: dict[str, Path] | None = None) -> dict[str, str]:
    """Build what is missing or stale; return {kind: image tag} for envoy, consul, jaeger, toxiproxy, python."""
    from ..provision.binaries import find_binary, require
    from ..provision.versions import ENVOY_VERSION, GO_BINARIES
    base_id = _ensure(client, base_spec(), progress)
    out: dict[str, str] = {}
    for kind in BINARY_KINDS:
        path = (binaries or {}).get(kind) or require(kind)
        version = ENVOY_VERSION if kind == "envoy" else GO_BINARIES[kind].version
        b = find_binary(kind)
        if b.source.startswith("env:") or b.source == "PATH":
            version = f"{version}-{file_digest(Path(path))[:8]}"  # a user's own binary gets its own tag
        spec = binary_spec(kind, Path(path), version, base_id)
        _ensure(client, spec, progress)
        out[kind] = spec.tag
    deps = pydeps_spec(base_id)
    deps_id = _ensure(client, deps, progress)
    py = python_spec(deps.tag, deps_id)
    _ensure(client, py, progress)
    out["python"] = py.tag
    return out


def image_for(kind: str, argv0: str) -> tuple[str, str]:
    """Which image (by kind key) runs a host argv[0], and the path to run inside it.

    A Python interpreter (sys.executable or anything named python*) maps to the
    python image's /usr/bin/python3; the Envoy ELF and the Go binaries map by
    the component kind to /usr/local/bin/<kind>.
    """
    base = os.path.basename(argv0)
    if base.startswith("python") or argv0 == sys.executable:
        return "python", IN_IMAGE_PYTHON
    if kind in BINARY_KINDS:
        return kind, f"{IN_IMAGE_BIN}/{kind}"
    for k in BINARY_KINDS:  # e.g. a user's binary named toxiproxy-server for an unknown kind
        if base.startswith(k):
            return k, f"{IN_IMAGE_BIN}/{k}"
    raise ComponentError(f"the docker runtime cannot map {argv0!r} (kind {kind}) to an image",
                         hint="only envoy, consul, jaeger, toxiproxy and python components run in containers")
