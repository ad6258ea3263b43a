"""Strict reading and atomic writing of the files meshbed is handed.

Every problem is one ``ConfigError`` line naming the file (and, for YAML, the
line): nothing here hangs, expands without bound or ends in a traceback.

    data = load_yaml(path, "topology file")             # topologies, profiles
    doc = load_json(path, "results file", allow_nonfinite=True)
    atomic_write(out, text, what="HTML report")          # temp file + rename, never a stray .tmp

Reading refuses, before a single byte is read:
  - a path that is not a regular file (a directory, a FIFO, /dev/zero, a socket);
  - a file over ``max_bytes`` (1 MB for configuration files).
YAML is parsed with a SafeLoader that also refuses:
  - duplicate mapping keys (YAML's "last key wins" would silently merge them);
  - aliases that expand to more than ``alias_budget`` extra nodes (a "billion
    laughs" bomb is refused from its node graph, without expanding it), and
    recursive aliases;
  - nesting deeper than ``max_depth`` levels (never a RecursionError);
  - non-finite numbers (.nan, .inf, 1e999) and integers beyond 64 bits.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, MeshbedError

MAX_CONFIG_BYTES = 1 << 20  # topologies and profiles: 1 MB is ~100x the largest real one
MAX_JSON_BYTES = 256 << 20  # results documents carry evidence; still far from "read /dev/zero"
MAX_DEPTH = 64  # nesting levels of a configuration file (real ones use < 8)
ALIAS_BUDGET = 10_000  # extra nodes aliases may add when expanded
MAX_INT = 2**63

__all__ = ["MAX_CONFIG_BYTES", "MAX_JSON_BYTES", "load_yaml", "parse_yaml", "load_json", "read_text", "read_bytes",
           "atomic_write", "check_writable_dir", "show", "one_line"]


def one_line(text: str) -> str:
    """``text`` with control characters escaped: an error message stays one line, whatever a path contains."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


def show(path: str | Path) -> str:
    return one_line(str(path))


def _size(n: int) -> str:
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} bytes"


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


# -- reading -----------------------------------------------------------------------------------------------------

def read_bytes(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES, *, missing_hint: str = "") -> bytes:
    """The content of a regular file of at most ``max_bytes``; ConfigError (one line) otherwise."""
    path = Path(path)
    p = show(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{p}: {what} not found", hint=missing_hint) from None
    except NotADirectoryError:
        raise ConfigError(f"{p}: {what} not found (a parent of it is a file, not a directory)") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{p}: {what} is {_kind(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:
        raise ConfigError(f"{p}: {what} is {_size(st.st_size)}, over the limit of {_size(max_bytes)}")
    try:
        # O_NONBLOCK: had the path been swapped for a FIFO since the stat, opening it must not hang
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        st2 = os.fstat(fd)
        if not stat.S_ISREG(st2.st_mode):
            raise ConfigError(f"{p}: {what} is {_kind(st2.st_mode)}, not a regular file")
        chunks, total = [], 0
        while True:  # the size cap holds even for a file that grows while we read it
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ConfigError(f"{p}: {what} is over the limit of {_size(max_bytes)}")
        return b"".join(chunks)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES, *, missing_hint: str = "") -> str:
    data = read_bytes(path, what, max_bytes, missing_hint=missing_hint)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{show(path)}: {what} is not UTF-8 text (byte {exc.start})") from None


# -- YAML ------------------------------------------------------------------------------------------------------

class _Refused(yaml.MarkedYAMLError):
    """A document this loader refuses (not a syntax error)."""


def _refuse(node_or_mark: Any, problem: str) -> _Refused:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return _Refused(problem=problem, problem_mark=mark)


_MERGE_TAG = "tag:yaml.org,2002:merge"


try:  # libyaml's parser (about 3x faster) under Python's composer, which can be bounded (libyaml's own recursion cannot)
    from yaml._yaml import CParser as _Parser

    class _ReaderScannerParser(_Parser):  # type: ignore[misc, valid-type]
        def __init__(self, stream: str) -> None:
            _Parser.__init__(self, stream)
except ImportError:  # pragma: no cover - PyYAML without libyaml
    class _ReaderScannerParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class _StrictLoader(yaml.composer.Composer, _ReaderScannerParser, yaml.constructor.SafeConstructor,
                    yaml.resolver.Resolver):
    """A safe loader (Python composer, so it can be bounded) with meshbed's refusals."""

    # the C parser brings its own composer: Python's wins, for the depth bound and the alias check
    check_node = yaml.composer.Composer.check_node
    get_node = yaml.composer.Composer.get_node
    get_single_node = yaml.composer.Composer.get_single_node

    max_depth = MAX_DEPTH
    alias_budget = ALIAS_BUDGET

    def __init__(self, stream: str) -> None:
        _ReaderScannerParser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self.anchors_used = False

    # composing: bounded depth, so deep nesting is a line, not a RecursionError
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            # PyYAML returns the anchored node itself for an alias; only then is the expansion walked
            self.anchors_used = True
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise _refuse(self.peek_event().start_mark, f"nested deeper than {self.max_depth} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Any:
        node = yaml.composer.Composer.compose_document(self)
        if node is not None and self.anchors_used:
            _check_expansion(node, self.alias_budget)
        return node

    # constructing: duplicate keys, non-finite numbers, out-of-range integers
    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    raise _refuse(key_node, f"a mapping key must be a plain value, not a {type(key).__name__}") from None
                if first is not None:
                    raise _refuse(key_node, f"duplicate key {key!r} (first at line {first + 1}); "
                                            "YAML would silently keep only the last one")
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_float(self, node: Any) -> float:
        v = super().construct_yaml_float(node)
        if not math.isfinite(v):
            raise _refuse(node, f"non-finite number {node.value!r} is not allowed")
        return v

    def construct_yaml_int(self, node: Any) -> int:
        try:
            v = super().construct_yaml_int(node)
        except ValueError:
            raise _refuse(node, f"integer {node.value[:20]!r}... is out of range") from None
        if abs(v) >= MAX_INT:
            raise _refuse(node, f"integer {node.value[:24]!r} is out of range (|n| < 2**63)")
        return v

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:  # e.g. a date 2024-13-45
            raise _refuse(node, f"invalid value {str(node.value)[:40]!r}: {exc}") from None


_StrictLoader.add_constructor("tag:yaml.org,2002:float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def _children(node: Any) -> list[Any]:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Any, budget: int) -> None:
    """Refuse a node graph whose expansion (every alias copied out) adds more than ``budget`` nodes.

    Sizes are computed once per distinct node (post-order, iterative), so a bomb
    costs time linear in its *text*, never in its expansion.
    """
    size: dict[int, int] = {}
    unique = 0
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    cap = budget * 4 + 1_000_000  # sizes saturate here: no huge integers for a bomb
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            on_path.discard(nid)
            size[nid] = min(cap, 1 + sum(size[id(c)] for c in _children(node)))
            continue
        if nid in size:
            continue
        if nid in on_path:
            raise _refuse(node, "recursive alias: a node contains itself")
        unique += 1
        on_path.add(nid)
        stack.append((node, True))
        for c in _children(node):
            cid = id(c)
            if cid in on_path:
                raise _refuse(c, "recursive alias: a node contains itself")
            if cid not in size:
                stack.append((c, False))
    extra = size[id(root)] - unique
    if extra > budget:
        raise _refuse(root, f"aliases expand to more than {budget} extra nodes (a YAML alias bomb?); "
                            "write the values out instead of repeating anchors")


def parse_yaml(text: str, source: str, *, max_depth: int = MAX_DEPTH, alias_budget: int = ALIAS_BUDGET) -> Any:
    """Parse one YAML document strictly; ConfigError '<source>: line L, column C: <problem>' otherwise."""
    loader = None
    try:
        loader = _StrictLoader(text)
        loader.max_depth = max_depth
        loader.alias_budget = alias_budget
        return loader.get_single_data()
    except _Refused as exc:
        raise ConfigError(f"{show(source)}: {_where(exc)}{one_line(str(exc.problem))}") from None
    except yaml.MarkedYAMLError as exc:
        problem = exc.problem or exc.context or "?"
        raise ConfigError(f"{show(source)}: {_where(exc)}invalid YAML: {one_line(str(problem))}") from None
    except yaml.YAMLError as exc:  # ReaderError: a control character, a NUL
        raise ConfigError(f"{show(source)}: invalid YAML: {one_line(str(exc).splitlines()[0])}") from None
    except RecursionError:  # belt and braces: max_depth keeps the composer far from the limit
        raise ConfigError(f"{show(source)}: nested too deeply") from None
    except (ValueError, OverflowError, TypeError) as exc:
        raise ConfigError(f"{show(source)}: invalid value: {one_line(str(exc))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _where(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def load_yaml(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES, *, missing_hint: str = "",
              max_depth: int = MAX_DEPTH, alias_budget: int = ALIAS_BUDGET) -> Any:
    """Read and parse a YAML file strictly (see the module doc); every refusal is one ConfigError line.

    ``what`` names the file in messages ("topology file", "profile"); ``missing_hint``
    is the hint when the file does not exist. Returns None for an empty document.
    """
    text = read_text(path, what, max_bytes, missing_hint=missing_hint)
    return parse_yaml(text, str(path), max_depth=max_depth, alias_budget=alias_budget)


# -- JSON ------------------------------------------------------------------------------------------------------

def _depth_ok(doc: Any, max_depth: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            children = v.values()
        elif isinstance(v, list):
            children = v
        else:
            continue
        if d > max_depth:
            return False
        stack.extend((c, d + 1) for c in children)
    return True


def load_json(path: str | Path, what: str, max_bytes: int = MAX_JSON_BYTES, *, missing_hint: str = "",
              allow_nonfinite: bool = False, max_depth: int = 200) -> Any:
    """Read and parse a JSON file strictly: regular file, size cap, no duplicate keys, bounded depth."""
    text = read_text(path, what, max_bytes, missing_hint=missing_hint)
    p = show(path)

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise ConfigError(f"{p}: {what}: duplicate key {one_line(k)[:60]!r}")
            out[k] = v
        return out

    def constant(name: str) -> float:
        if not allow_nonfinite:
            raise ConfigError(f"{p}: {what}: non-finite number {name} is not allowed")
        return float(name.replace("Infinity", "inf"))

    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: {what} is not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise ConfigError(f"{p}: {what} is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{p}: {what}: invalid value: {one_line(str(exc))}") from None
    if not _depth_ok(doc, max_depth):
        raise ConfigError(f"{p}: {what} is nested deeper than {max_depth} levels")
    return doc


# -- writing ---------------------------------------------------------------------------------------------------

_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                errno.ENAMETOOLONG, errno.ELOOP}


def _write_error(path: Path, what: str, exc: OSError) -> MeshbedError:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        parent = _file_ancestor(path)
        if parent is not None:
            reason = f"{show(parent)} is a file, not a directory"
    cls = ConfigError if exc.errno in _PATH_ERRNOS else MeshbedError
    return cls(f"{show(path)}: cannot write {what}: {reason}")


def _file_ancestor(path: Path) -> Path | None:
    for a in [path, *path.parents]:
        if a.exists() or a.is_symlink():
            return a if not a.is_dir() else None
    return None


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def atomic_write(path: str | Path, data: str | bytes, *, what: str = "file", mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and a rename.

    Readers see the old content or the new one, never half; on any failure the
    temp file is removed. ``mode`` defaults to 0666 minus the umask (0600 for
    private files: pass ``mode=0o600``). Parents are created. Path problems
    (a directory in the way, a parent that is a file, read-only, no permission)
    are one ConfigError line.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{show(path)}: cannot write {what}: it is a directory; give a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, what, exc) from None
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:80]}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, what, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_error(path, what, exc) from None
        raise
    return path


def check_writable_dir(path: str | Path, what: str) -> Path:
    """Check, without creating anything, that ``path`` is or can become a writable directory.

    One ConfigError line when it is a file, lies under a file, or its nearest
    existing ancestor is not writable (read-only filesystem, no permission).
    """
    path = Path(path)
    p = show(path)
    try:
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{p}: the {what} is a file, not a directory")
        ancestor = path
        while not ancestor.exists():
            if ancestor.is_symlink():
                raise ConfigError(f"{p}: the {what} is a dangling symlink ({show(ancestor)})")
            ancestor = ancestor.parent
    except OSError as exc:
        raise ConfigError(f"{p}: unusable {what}: {exc.strerror or exc}") from None
    if not ancestor.is_dir():
        raise ConfigError(f"{p}: the {what} cannot be created: {show(ancestor)} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        why = "read-only filesystem" if _read_only_fs(ancestor) else "no write permission"
        where = "is not writable" if ancestor == path else f"cannot be created in {show(ancestor)}"
        raise ConfigError(f"{p}: the {what} {where}: {why}")
    try:  # access() says yes to root everywhere; a directory made and removed at once is the real test
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".meshbed-probe-"))
    except OSError as exc:
        where = "is not writable" if ancestor == path else f"cannot be created in {show(ancestor)}"
        raise ConfigError(f"{p}: the {what} {where}: {exc.strerror or exc}") from None
    return path


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False
