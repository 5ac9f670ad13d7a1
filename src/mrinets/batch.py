"""Many subjects as independent tasks: Dask locally or on a cluster, resumable, shardable.

One subject is one task with its own output folder. A task that finished
leaves a ``.mrinets-done`` marker listing its outputs, so a rerun skips it
while they all still exist; a task that fails leaves nothing (pipelines
publish their outputs all at once) and the others go on. ``num_parts``/
``part_id`` split the task list the way nnU-Net splits its inference across a
SLURM array.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrinets.errors import ArgumentError, InputError
from mrinets.io.output import guard_inputs, write_json, write_text

__all__ = ["DONE_MARKER", "SCHEDULER_TIMEOUT", "Task", "TaskResult", "check_subject_names", "refused_task",
           "run_tasks", "shard", "write_summary"]

log = logging.getLogger(__name__)
DONE_MARKER = ".mrinets-done"
SCHEDULER_TIMEOUT = 5.0  # seconds to reach a --scheduler; a running scheduler answers in milliseconds
_LABEL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Task:
    """A unit of work: ``run()`` writes everything into ``outdir``.

    ``run`` must be picklable (a module-level function or a
    :func:`functools.partial` of one) to travel to Dask workers. Tasks that
    share a folder (two pipelines in one BIDS ``anat`` folder) need their own
    ``marker`` names.
    """

    name: str
    outdir: Path
    run: Callable[[], object]
    marker: str = DONE_MARKER


@dataclass(frozen=True)
class TaskResult:
    name: str
    status: str  # "done", "skipped" or "failed"
    seconds: float
    message: str = ""


def shard(tasks: Sequence[Task], *, num_parts: int = 1, part_id: int = 0) -> list[Task]:
    """Tasks ``part_id``, ``part_id + num_parts``, ... of the list."""
    if num_parts < 1:
        raise ArgumentError("--num-parts", f"must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ArgumentError("--part-id", f"must be in 0..{num_parts - 1}, got {part_id}")
    return list(tasks[part_id::num_parts])


def check_subject_names(names: Sequence[tuple[str, str]], *, reserved: Sequence[str] = ()) -> None:
    """Refuse, before any work, subject names that are not labels, or that repeat.

    ``names`` are ``(where, name)`` pairs (``where`` e.g. ``table.tsv:3``). A
    name is a BIDS-like label (letters, digits, ``-``, ``_``): it becomes a
    folder inside the output folder and must stay there. Names differing only
    in case count as the same (they share a folder on macOS and Windows);
    ``reserved`` are the names of files the run writes beside the subjects.
    """
    seen: dict[str, str] = {}
    for where, name in names:
        if name in reserved:
            raise ArgumentError(where, f"subject {name!r} is the name of the batch's summary file")
        if not _LABEL.fullmatch(name):
            raise ArgumentError(where, f"{name!r} is not a subject label (letters, digits, - and _ only): it names "
                                       "the subject's output folder")
        key = name.lower()
        if key in seen:
            first_where, first = seen[key]
            rows = f"rows {first_where.rsplit(':', 1)[-1]} and {where.rsplit(':', 1)[-1]}"
            same = "" if first == name else "; names differing only in case share a folder on some file systems"
            raise ArgumentError(where, f"subject {name!r} is listed twice ({rows}{same})")
        seen[key] = (where, name)


def _refuse(where: str, problem: str) -> None:
    raise InputError(where, problem)


def refused_task(name: str, outdir: Path, error: InputError, *, marker: str = DONE_MARKER) -> Task:
    """A task that reports ``error``: a subject whose inputs were refused before any work, kept in the summary."""
    return Task(name=name, outdir=Path(outdir), run=functools.partial(_refuse, error.where, error.problem),
                marker=marker)


def _finished(task: Task) -> bool:
    """Whether the task's marker exists and every output it lists is still there."""
    marker = Path(task.outdir) / task.marker
    if not marker.is_file():
        return False
    try:
        outputs = json.loads(marker.read_text(encoding="utf-8"))["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        log.info("%s: %s lists no outputs; running the subject again", task.name, marker)
        return False
    missing = [name for name in outputs if not (Path(task.outdir) / name).exists()]
    if missing:
        log.info("%s: %s gone since it finished; running the subject again", task.name, ", ".join(missing))
        return False
    return True


def _execute(task: Task) -> TaskResult:
    tic = time.perf_counter()
    try:
        with guard_inputs():
            written = task.run()
    except InputError as exc:
        return TaskResult(task.name, "failed", time.perf_counter() - tic, str(exc))
    except Exception as exc:  # noqa: BLE001 - one subject's bug must not stop the cohort; it is reported
        message = f"{type(exc).__name__}: {exc}"
        log.debug("task %s failed:\n%s", task.name, traceback.format_exc())
        return TaskResult(task.name, "failed", time.perf_counter() - tic, message)
    outdir = Path(task.outdir)
    outputs = [os.path.relpath(p, outdir) for p in (written or [])]
    write_json(outdir / task.marker, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "outputs": outputs})
    return TaskResult(task.name, "done", time.perf_counter() - tic)


def run_tasks(
    tasks: Sequence[Task],
    *,
    workers: int = 1,
    scheduler: str | None = None,
    quiet: bool = False,
) -> list[TaskResult]:
    """Run the tasks that have not finished yet.

    Parameters
    ----------
    tasks : sequence of Task
    workers : int
        Worker processes of a local Dask cluster; ``0`` runs the tasks in this
        process, one after the other (no Dask needed).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``), e.g. one
        started by dask-jobqueue on SLURM; overrides ``workers``.
    quiet : bool
        No progress bar.

    Returns
    -------
    list of TaskResult
        In the order of ``tasks``.
    """
    from rich.progress import Progress

    if scheduler is None and workers < 0:
        raise ArgumentError("--workers", f"must be 0 (no Dask) or more, got {workers}")
    results: dict[str, TaskResult] = {}
    todo = []
    for task in tasks:
        if _finished(task):
            results[task.name] = TaskResult(task.name, "skipped", 0.0, "already finished")
        else:
            todo.append(task)
    with Progress(disable=quiet, transient=True) as progress:
        bar = progress.add_task("subjects", total=len(todo))
        if todo and workers == 0 and scheduler is None:
            for task in todo:
                results[task.name] = _execute(task)
                progress.advance(bar)
        elif todo:
            for result in _run_dask(todo, workers=workers, scheduler=scheduler):
                results[result.name] = result
                progress.advance(bar)
    return [results[t.name] for t in tasks]


def _quiet_dask(level: int) -> None:
    """Set every ``distributed`` logger (Dask sets its children's levels itself) to ``level``."""
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


def _run_dask(tasks: list[Task], *, workers: int, scheduler: str | None):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ArgumentError("--workers", "Dask is not installed: pip install 'mrinets[batch]', or use --workers 0") from None
    if scheduler is None and workers < 1:
        raise ArgumentError("--workers", f"must be 0 (no Dask) or more, got {workers}")
    debug = log.getEffectiveLevel() <= logging.DEBUG
    if not debug:
        _quiet_dask(logging.WARNING)  # each worker's start and end; mrinets reports the subjects
    if scheduler:
        _probe_scheduler(scheduler)
    cluster = client = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout=SCHEDULER_TIMEOUT)
            except (OSError, ValueError) as exc:
                raise ArgumentError("--scheduler", f"cannot connect to {scheduler} ({_first_line(exc)})") from None
        else:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        futures = [client.submit(_execute, task, key=f"mrinets-{task.name}", pure=False) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        if not debug:
            # Interrupted (SIGINT, SIGTERM): the workers die with the job; their teardown is not news to the user.
            _quiet_dask(logging.CRITICAL + 1)
        raise
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _probe_scheduler(address: str) -> None:
    """Fail within seconds, in one line, when nothing listens at a TCP-based scheduler address."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls", "ws", "wss"):
        return  # inproc, ucx: Dask's own connection (and its timeout) decides
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or port is None:
        raise ArgumentError("--scheduler", f"{address!r} is not an address like tcp://host:8786")
    try:
        socket.create_connection((host, port), timeout=SCHEDULER_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or ("timed out" if isinstance(exc, TimeoutError) else _first_line(exc))
        raise ArgumentError("--scheduler", f"no Dask scheduler answers at {address} ({reason})") from None


def write_summary(results: Sequence[TaskResult], path: str | Path) -> Path:
    """A TSV of every task's status, time and message."""
    rows = ["subject\tstatus\tseconds\tmessage"]
    rows += [f"{r.name}\t{r.status}\t{r.seconds:.1f}\t{' '.join(r.message.split())}" for r in results]
    return write_text(path, "\n".join(rows) + "\n")
