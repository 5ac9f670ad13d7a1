"""Many subjects as independent tasks: Dask locally or on a cluster, resumable, shardable.

One subject is one task with its own output folder. A task that finished
leaves a ``.mrinets-done`` marker, so a rerun skips it; a task that fails
leaves nothing (pipelines publish their outputs all at once) and the others go
on. ``num_parts``/``part_id`` split the task list the way nnU-Net splits its
inference across a SLURM array.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrinets.errors import ArgumentError, InputError
from mrinets.io.output import write_text

__all__ = ["DONE_MARKER", "Task", "TaskResult", "run_tasks", "shard", "write_summary"]

log = logging.getLogger(__name__)
DONE_MARKER = ".mrinets-done"


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


def _execute(task: Task) -> TaskResult:
    tic = time.perf_counter()
    try:
        task.run()
    except InputError as exc:
        return TaskResult(task.name, "failed", time.perf_counter() - tic, str(exc))
    except Exception as exc:  # noqa: BLE001 - one subject's bug must not stop the cohort; it is reported
        message = f"{type(exc).__name__}: {exc}"
        log.debug("task %s failed:\n%s", task.name, traceback.format_exc())
        return TaskResult(task.name, "failed", time.perf_counter() - tic, message)
    write_text(Path(task.outdir) / task.marker, f"finished {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
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

    results: dict[str, TaskResult] = {}
    todo = []
    for task in tasks:
        if (Path(task.outdir) / task.marker).exists():
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


def _run_dask(tasks: list[Task], *, workers: int, scheduler: str | None):
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ArgumentError("--workers", "Dask is not installed: pip install 'mrinets[batch]', or use --workers 0") from None
    if scheduler is None and workers < 1:
        raise ArgumentError("--workers", f"must be 0 (no Dask) or more, got {workers}")
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                   dashboard_address=None)
    client = Client(scheduler) if scheduler else Client(cluster)
    try:
        futures = [client.submit(_execute, task, key=f"mrinets-{task.name}", pure=False) for task in tasks]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def write_summary(results: Sequence[TaskResult], path: str | Path) -> Path:
    """A TSV of every task's status, time and message."""
    rows = ["subject\tstatus\tseconds\tmessage"]
    rows += [f"{r.name}\t{r.status}\t{r.seconds:.1f}\t{' '.join(r.message.split())}" for r in results]
    return write_text(path, "\n".join(rows) + "\n")
