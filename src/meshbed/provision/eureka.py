"""meshbed's Eureka server (``registry: eureka``): a Spring Cloud Netflix Eureka Server built with Maven.

Like the Go control plane it is built from sources in this repository
(``provision/eureka/``: a pom pinning Spring Boot and spring-cloud-dependencies,
one class, one properties file); its "version" is a hash of those sources and
names its cache directory, ``$MESHBED_CACHE/eureka/<hash>/``. A build runs
``mvn -B package`` in a scratch copy (the sources stay clean), extracts the
jar (``-Djarmode=tools extract``) and records a class-data-sharing archive in
one training start, so that later starts take about 2 s instead of about 17 s.

Your own server: ``MESHBED_EUREKA_URL`` (meshbed starts none and uses that
one) or ``MESHBED_EUREKA_JAR`` (meshbed starts that jar, without the archive).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ComponentError

NAME = "eureka"
URL_ENV = "MESHBED_EUREKA_URL"  # a running server of yours: meshbed starts none
JAR_ENV = "MESHBED_EUREKA_JAR"  # your own jar: meshbed starts it
SPRING_BOOT = "4.0.7"
SPRING_CLOUD = "2025.1.4"
PINNED = f"spring-cloud {SPRING_CLOUD} (boot {SPRING_BOOT})"
JAR = "meshbed-eureka.jar"
ARCHIVE = "app.jsa"
READY = "READY"  # written last: a build directory without it is unfinished
MIN_JAVA = 17
# flags of every start (the training run too: an archive is only used by a JVM started like the one that made it)
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xss512k", "-XX:MaxRAM=1g", "-Xshare:auto")
APP_FLAGS = ("--spring.main.lazy-initialization=true",)
KEEP_BUILDS = 2

Progress = Callable[[str], None]


def source_dir() -> Path:
    """The Maven project shipped next to this module."""
    return Path(__file__).resolve().parent / "eureka"


def source_hash(src: Path | None = None) -> str:
    """12 hex digits over the pom, the Java class and the properties (and the JVM flags, which shape the archive)."""
    src = src or source_dir()
    h = hashlib.sha256(" ".join(JVM_FLAGS).encode())
    files = [src / "pom.xml", *sorted((src / "src").rglob("*"))]
    for f in files:
        if f.is_file():
            h.update(f.relative_to(src).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def cache_root() -> Path:
    from .binaries import cache_dir
    return cache_dir() / NAME


def build_dir(version: str | None = None) -> Path:
    """Where the build of these sources lives: the extracted jar, its lib/, and the archive."""
    return cache_root() / (version or source_hash())


@dataclass(frozen=True)
class EurekaServer:
    """Where the Eureka server of a mesh comes from (what `meshbed doctor` lists)."""

    source: str  # "env:MESHBED_EUREKA_URL", "env:MESHBED_EUREKA_JAR", "cache", "missing ...", "unavailable: ..."
    url: str = ""  # an external server: use it, start nothing
    jar: Path | None = None
    archive: Path | None = None

    @property
    def found(self) -> bool:
        return bool(self.url) or self.jar is not None

    def command(self, port: int, host: str = "127.0.0.1") -> list[str]:
        """The java command line that serves Eureka on ``host:port``."""
        if self.jar is None:
            raise ComponentError(f"no Eureka server jar ({self.source})", hint=fix_hint(self))
        java = _java()
        flags = list(JVM_FLAGS)
        if self.archive is not None and self.archive.is_file():
            flags.append(f"-XX:SharedArchiveFile={self.archive}")
        return [java, *flags, "-jar", str(self.jar), f"--server.port={port}", f"--server.address={host}",
                *APP_FLAGS]


def find() -> EurekaServer:
    """Resolve the server without building anything: env URL, env jar, else this source hash's cached build."""
    url = os.environ.get(URL_ENV, "").strip()
    if url:
        return EurekaServer(f"env:{URL_ENV}", url=url.rstrip("/"))
    jar = os.environ.get(JAR_ENV, "").strip()
    if jar:
        return EurekaServer(f"env:{JAR_ENV}", jar=Path(jar) if Path(jar).is_file() else None)
    if not (source_dir() / "pom.xml").is_file():
        return EurekaServer(f"unavailable: no Eureka sources in this install; set {URL_ENV} or {JAR_ENV}")
    d = build_dir()
    if (d / READY).is_file():
        return EurekaServer("cache", jar=d / JAR, archive=d / ARCHIVE)
    return EurekaServer("missing (`meshbed provision --only eureka` builds it)")


def fix_hint(s: EurekaServer) -> str:
    if s.source == f"env:{JAR_ENV}":
        return f"{JAR_ENV} must name a Eureka server jar; fix the path or unset it"
    if s.source.startswith("unavailable"):
        return s.source.removeprefix("unavailable: ")
    return (f"run `meshbed provision --only eureka` (needs Java >= {MIN_JAVA} and Maven), "
            f"or set {URL_ENV}=http://host:port/eureka or {JAR_ENV}=/path/to/eureka-server.jar")


def version(s: EurekaServer) -> str:
    """What `meshbed doctor` prints: the cached build's source hash, or where the server is."""
    if s.url:
        return "external"
    if s.jar is None:
        return "missing"
    return s.jar.parent.name if s.source == "cache" else s.jar.name


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise ComponentError("java is not on PATH, so meshbed cannot run a Eureka server",
                             hint=f"install a JDK >= {MIN_JAVA} (apt-get install openjdk-17-jdk-headless), "
                             f"or set {URL_ENV} to a running Eureka server")
    return java


def _mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise ComponentError("mvn is not on PATH, so meshbed cannot build its Eureka server",
                             hint=f"install Maven (apt-get install maven), or set {URL_ENV} or {JAR_ENV}")
    return mvn


def toolchain_missing() -> str:
    """Empty when java and mvn are on PATH, else what is missing (for tests to skip with a reason)."""
    missing = [t for t in ("java", "mvn") if shutil.which(t) is None]
    return f"{' and '.join(missing)} not on PATH" if missing else ""


def _run(cmd: list[str], cwd: Path, what: str, timeout: float) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ComponentError(f"building {NAME} failed at {what}: {exc}", hint=fix_hint(EurekaServer("missing"))) from None
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stdout + "\n" + proc.stderr).splitlines() if ln.strip()][-3:]
        raise ComponentError(f"building {NAME} failed at {what} (exit {proc.returncode}): {' | '.join(tail)}",
                             hint="it needs Maven Central; " + fix_hint(EurekaServer("missing")))


def _prune(keep: Path) -> None:
    builds = sorted((p for p in cache_root().iterdir() if p.is_dir() and p != keep and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def build(progress: Progress = lambda s: None, force: bool = False) -> Path:
    """Build, extract and train the server into the cache; a no-op when this source hash is built. Returns the jar."""
    out = build_dir()
    if (out / READY).is_file() and not force:
        return out / JAR
    mvn, java = _mvn(), _java()
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as lock:  # one build at a time; the loser finds the result
        fcntl.flock(lock, fcntl.LOCK_EX)
        out = build_dir()
        if (out / READY).is_file() and not force:
            return out / JAR
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
            work = Path(tmp) / "src"
            shutil.copytree(source_dir(), work, ignore=shutil.ignore_patterns("target"))
            progress(f"building {NAME} {out.name} ({PINNED}; mvn -B package, about 45 s cold) ...")
            _run([mvn, "-B", "-q", "package", "-DskipTests"], work, "mvn package", 1800)
            if out.exists():
                shutil.rmtree(out)
            # extracted and trained in place: an archive is only used with the class path it was made with
            _run([java, "-Djarmode=tools", "-jar", str(work / "target" / JAR), "extract", "--destination", str(out)],
                 work, "jar extract", 300)
            progress(f"{NAME}: recording the class-data-sharing archive (one training start) ...")
            # the archive is written at exit; onRefresh exits right after the context starts
            try:
                _run([java, *JVM_FLAGS, f"-XX:ArchiveClassesAtExit={out / ARCHIVE}", "-Dspring.context.exit=onRefresh",
                      "-Xlog:cds=off", "-Xlog:cds+dynamic=off", "-jar", str(out / JAR), "--server.port=0",
                      "--server.address=127.0.0.1", *APP_FLAGS], out, "the training start", 600)
            except ComponentError:
                shutil.rmtree(out, ignore_errors=True)
                raise
            (out / READY).write_text(f"{PINNED}\n")
        _prune(out)
        progress(f"built {NAME} {out.name} in {time.monotonic() - start:.1f}s -> {out / JAR}")
        return out / JAR


def ensure(progress: Progress = lambda s: None) -> EurekaServer:
    """The server a mesh uses, built on first use (lazily) when it is not cached yet."""
    s = find()
    if s.found:
        return s
    if s.source.startswith(("unavailable", "env:")):
        raise ComponentError(f"{NAME}: {s.source}", hint=fix_hint(s))
    build(progress)
    return find()
