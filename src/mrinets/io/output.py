"""Atomic output: a file appears whole under its final name or not at all.

A pipeline writes every output of a run through one :class:`OutputStage`: files
go into a hidden staging folder inside the output folder and are moved to their
final names only when the whole run succeeded, so a failure leaves no partial
file and no half set of outputs.

Three more promises hold for every file written here:

- it gets the permissions of the user's umask (``tempfile`` creates 0600);
- inside :func:`guard_inputs` (every ``mrinets`` command runs in one) it never
  replaces a file the run read (:func:`note_input`), whatever path, symlink or
  output folder leads to it;
- a staging folder or temporary file left by a killed run (its name holds the
  host and process id) is removed by the next run that writes into its folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrinets.errors import OutputError

__all__ = ["OutputStage", "atomic_path", "ensure_outdir", "guard_inputs", "note_input", "write_json", "write_text"]

log = logging.getLogger(__name__)

STAGE_PREFIX = ".mrinets-stage-"
_TMP_TAG = ".mrinets-tmp-"
_OWNER = f"{os.getpid()}@{socket.gethostname()}"
_STARTED = time.time()
# Errors of the place written to, not of the program: reported in one line, like any output problem.
_FULL_OR_LOCKED = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}
_INPUTS: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("mrinets_inputs", default=None)


def _suffix(path: Path) -> str:
    """Keep double suffixes such as ``.nii.gz`` so writers pick the right format."""
    name = path.name
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return double
    return path.suffix


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: read by setting it back at once
    os.umask(mask)
    return mask


def _entry(path: Path) -> str:
    """The directory entry ``path`` names: its folder with symlinks resolved, and its own name."""
    return os.path.join(os.path.realpath(path.parent), path.name)


def _identities(path: str | os.PathLike) -> set[str]:
    path = Path(path).absolute()
    return {_entry(path), os.path.realpath(path)}


@contextlib.contextmanager
def guard_inputs() -> Iterator[None]:
    """Within this block no output may replace a file noted by :func:`note_input`.

    The command line runs every command inside one, and each batch task in its
    own, so a library user who saves over a file on purpose is not stopped.
    """
    outer = _INPUTS.get()
    token = _INPUTS.set(set(outer) if outer else set())  # a batch task also keeps the run's own inputs
    try:
        yield
    finally:
        _INPUTS.reset(token)


def note_input(path: str | os.PathLike) -> None:
    """Record ``path`` as read by the current run (a no-op outside :func:`guard_inputs`)."""
    inputs = _INPUTS.get()
    if inputs is not None:
        inputs.update(_identities(path))


def _check_not_input(final: Path) -> None:
    inputs = _INPUTS.get()
    if inputs and _identities(final) & inputs:
        raise OutputError(final, "would replace an input of this run; choose another output folder")


def _owner_is_gone(owner: str) -> bool:
    """Whether the process ``pid@host`` that made a stage or temporary file has ended."""
    pid_text, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid_text.isdigit() or os.name == "nt":
        # Another machine's process (a shared file system) may still be running; on Windows, os.kill(pid, 0)
        # would stop the process instead of probing it.
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _stale(entry: os.DirEntry) -> bool:
    name = entry.name
    if name.startswith(STAGE_PREFIX):
        rest = name[len(STAGE_PREFIX):]
        if "@" in rest:
            return _owner_is_gone(rest.rsplit("-", 1)[0])
        # Stages of releases that did not record their owner: stale when older than this run.
        with contextlib.suppress(OSError):
            return entry.stat(follow_symlinks=False).st_mtime < _STARTED
        return False
    if name.startswith(".") and _TMP_TAG in name:
        return _owner_is_gone(name.split(_TMP_TAG, 1)[1].rsplit("-", 1)[0])
    return False


def clean_stale(folder: str | os.PathLike) -> None:
    """Remove staging folders and temporary files that killed runs left in ``folder``."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") and _stale(entry):
                log.info("removing %s, left by a run that was killed", entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _raw_bids_root(folder: Path) -> bool:
    description = folder / "dataset_description.json"
    if not description.is_file():
        return False
    try:
        kind = json.loads(description.read_text(encoding="utf-8")).get("DatasetType", "raw")
    except (OSError, ValueError, AttributeError):
        return True  # unreadable: assume the worst, it may be someone's raw data
    return kind != "derivative"


def ensure_outdir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that we may write into it.

    Raises
    ------
    OutputError
        If the path is empty, is the root of a raw BIDS dataset, or the folder
        cannot be created or written.
    """
    if not str(path).strip():
        raise OutputError("output folder", "the path is empty; give a folder (. for the current one)")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output path exists and is not a folder")
    if out.is_dir() and _raw_bids_root(out.resolve()):
        raise OutputError(out, "is the root of a raw BIDS dataset; write derivatives to its derivatives/ folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create output folder ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(out, "output folder is not writable")
    return out


def _chmod_as_umask(path: Path, base: int = 0o666) -> None:
    os.chmod(path, base & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the suffix of ``path`` (``.nii.gz`` included) so that
    libraries that choose a format from the name write the right one. On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    parent = final.parent
    if final.is_dir():
        raise OutputError(final, "is a folder; give a file name")
    _check_not_input(final)
    clean_stale(parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}{_TMP_TAG}{_OWNER}-", suffix=_suffix(final), dir=parent)
    except OSError as exc:
        raise OutputError(parent, f"cannot write into folder ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _chmod_as_umask(tmp)
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        if exc.errno not in _FULL_OR_LOCKED:
            raise
        raise OutputError(final, f"cannot be written ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the few renames that publish a run, so a set is never half published."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class OutputStage:
    """Collect a run's outputs in a staging folder and publish them together.

    Examples
    --------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> with OutputStage(out) as stage:
    ...     _ = stage.path("measures.json").write_text("{}")
    >>> sorted(p.name for p in Path(out).iterdir())
    ['measures.json']
    """

    def __init__(self, outdir: str | os.PathLike) -> None:
        self.outdir = ensure_outdir(outdir)
        self._stage: Path | None = None
        self._names: list[str] = []

    def __enter__(self) -> OutputStage:
        clean_stale(self.outdir)
        try:
            self._stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{_OWNER}-", dir=self.outdir))
        except OSError as exc:
            raise OutputError(self.outdir, f"cannot write into folder ({exc.strerror or exc})") from None
        return self

    def path(self, name: str) -> Path:
        """Where to write output ``name`` (a plain file name) during the run."""
        if self._stage is None:
            raise RuntimeError("OutputStage.path() called outside its 'with' block")
        if Path(name).name != name:
            raise ValueError(f"output name must be a plain file name, got {name!r}")
        final = self.final(name)
        if final.is_dir():
            raise OutputError(final, "is a folder; an output file of this name cannot replace it")
        _check_not_input(final)
        if name not in self._names:
            self._names.append(name)
        return self._stage / name

    @property
    def names(self) -> list[str]:
        """Names of the outputs written so far, in order."""
        return list(self._names)

    def final(self, name: str) -> Path:
        """Where output ``name`` will be once published."""
        return self.outdir / name

    def __exit__(self, exc_type, exc, tb) -> None:
        stage, self._stage = self._stage, None
        try:
            if exc_type is None:
                with _signals_held():
                    for name in self._names:
                        src = stage / name
                        if src.exists():
                            os.replace(src, self.outdir / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def refuse_inside_raw_bids(outdir: str | os.PathLike, bids_root: str | os.PathLike) -> None:
    """Refuse an output folder that is, or lies inside, the raw BIDS dataset at ``bids_root``.

    BIDS derivatives live in ``<root>/derivatives/``, which stays allowed.
    """
    out = Path(os.path.realpath(outdir))
    root = Path(os.path.realpath(bids_root))
    if _raw_bids_root(root):
        if out == root:
            raise OutputError(outdir, "is the root of a raw BIDS dataset; write derivatives to its derivatives/ "
                                      "folder")
        if root in out.parents and (root / "derivatives") not in (out, *out.parents):
            raise OutputError(outdir, f"is inside the raw BIDS dataset {root}; write derivatives to "
                                      f"{root / 'derivatives'}/<name>")
