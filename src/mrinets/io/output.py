"""Atomic output: a file appears whole under its final name or not at all.

A pipeline writes every output of a run through one :class:`OutputStage`: files
go into a hidden staging folder inside the output folder and are moved to their
final names only when the whole run succeeded, so a failure leaves no partial
file and no half set of outputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrinets.errors import OutputError

__all__ = ["OutputStage", "atomic_path", "ensure_outdir", "write_json", "write_text"]


def _suffix(path: Path) -> str:
    """Keep double suffixes such as ``.nii.gz`` so writers pick the right format."""
    name = path.name
    for double in (".nii.gz", ".tar.gz"):
        if name.endswith(double):
            return double
    return path.suffix


def ensure_outdir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that we may write into it.

    Raises
    ------
    OutputError
        If the folder cannot be created or written.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(out, "output path exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(out, f"cannot create output folder ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(out, "output folder is not writable")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file keeps the suffix of ``path`` (``.nii.gz`` included) so that
    libraries that choose a format from the name write the right one. On any
    exception the temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    parent = final.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=_suffix(final), dir=parent)
    except OSError as exc:
        raise OutputError(parent, f"cannot write into folder ({exc.strerror or exc})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, final)
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
        try:
            self._stage = Path(tempfile.mkdtemp(prefix=".mrinets-stage-", dir=self.outdir))
        except OSError as exc:
            raise OutputError(self.outdir, f"cannot write into folder ({exc.strerror or exc})") from None
        return self

    def path(self, name: str) -> Path:
        """Where to write output ``name`` (a plain file name) during the run."""
        if self._stage is None:
            raise RuntimeError("OutputStage.path() called outside its 'with' block")
        if Path(name).name != name:
            raise ValueError(f"output name must be a plain file name, got {name!r}")
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
                for name in self._names:
                    src = stage / name
                    if src.exists():
                        os.replace(src, self.outdir / name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
