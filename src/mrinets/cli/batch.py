"""``mrinets batch``: one pipeline over many subjects listed in a table."""

from __future__ import annotations

import argparse
import csv
import functools
import sys
from pathlib import Path

from mrinets.cli.common import COMMANDS, add_common, nonnegative_int, positive_int

NAME = "batch"
_COLUMNS = {"qsm": {"subject", "mag", "phase", "te", "b0"}, "wmh": {"subject", "t1"},
            "cmb": {"subject", "image", "contrast"}, "microstructure": {"subject", "dwi", "bval", "bvec"},
            "lowfield": {"subject", "image"}}
# The cohort tables each pipeline gathers beside the subjects' folders.
_COHORT = {"wmh": "cohort_wmh.csv", "cmb": "cohort_cmb.csv", "microstructure": "cohort_microstructure.tsv",
           "lowfield": "cohort_lowfield.csv"}


def add_scale_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``batch`` and ``bids``: workers, cluster, sharding."""
    p.add_argument("--workers", type=nonnegative_int, default=1,
                   help="local Dask worker processes (default 1); 0 runs subjects here without Dask")
    p.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://host:8786 (refused if it does "
                                        "not answer within 5 s)")
    p.add_argument("--num-parts", type=positive_int, default=1,
                   help="split the subjects into this many parts (SLURM arrays)")
    p.add_argument("--part-id", type=nonnegative_int, default=0, help="which part this process runs (0-based)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME,
        help=COMMANDS[NAME],
        description="qsm: a TSV with columns subject, mag, phase, te (seconds, separated by spaces or commas), "
        "b0 (tesla), and optionally b0_dir (three numbers), mask, labels. wmh: a TSV with columns subject, t1; "
        "the per-subject CSVs are gathered into OUT/cohort_wmh.csv. microstructure: columns subject, dwi, bval, "
        "bvec and optionally mask; the measures are gathered into OUT/cohort_microstructure.tsv. cmb: columns "
        "subject, image, contrast (swi, gre or qsm) and optionally mask; the counts are gathered into "
        "OUT/cohort_cmb.csv. lowfield: columns subject, image and optionally contrast (t1, the default, or t2); "
        "the measures are gathered into OUT/cohort_lowfield.csv. Relative paths are relative to the TSV. Each "
        "subject is written to OUT/<subject>/; finished subjects are skipped on rerun.",
    )
    p.add_argument("pipeline", choices=list(_COLUMNS))
    p.add_argument("subjects", help="TSV listing the subjects")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=("tkd", "tv", "pedqnet"), default="tkd", help="qsm: dipole inversion")
    p.add_argument("--weights", help="wmh, cmb, microstructure, lowfield: weights file (default: the shipped model)")
    p.add_argument("--space", choices=("native", "mni"), default="native",
                   help="cmb: the images are in MNI space, so each microbleed gets its MARS location class")
    p.add_argument("--no-grow", action="store_true", help="wmh: do not grow the trimmed mask (wmh predict --no-grow)")
    add_scale_options(p)
    add_common(p)
    p.set_defaults(func=_run)


def _numbers(text: str, where: str) -> tuple[float, ...]:
    from mrinets.errors import ArgumentError

    try:
        return tuple(float(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise ArgumentError(where, f"not a list of numbers: {text!r}") from None


def summary_name(part_id: int) -> str:
    return f"mrinets_summary_part{part_id}.tsv"


def _read_table(path: Path, needed: set[str], part_id: int):
    """The table's rows, refused in one line before any work if its shape or a subject name is wrong."""
    from mrinets.batch import check_subject_names
    from mrinets.io.tables import read_tsv

    columns = ["subject"] + sorted(needed - {"subject"})
    rows = read_tsv(path, required=columns)
    check_subject_names([(f"{path}:{row.line}", row["subject"]) for row in rows],
                        reserved=[summary_name(part_id), *_COHORT.values()])
    return rows


_QSM_COLUMNS = {"echo_times": "te", "b0": "b0", "b0_dir": "b0_dir"}


def _qsm_config(row, where: str, method: str):
    """The row's QSM configuration; its problems name the row and the column."""
    from mrinets.errors import ArgumentError, InputError
    from mrinets.pipelines import qsm

    te = _numbers(row["te"], f"{where}: te")
    b0 = _numbers(row["b0"], f"{where}: b0")
    if len(b0) != 1:
        raise ArgumentError(f"{where}: b0", f"give one field strength in tesla, got {row['b0']!r}")
    b0_dir = _numbers(row.get("b0_dir") or "0 0 1", f"{where}: b0_dir")
    try:
        return qsm.QsmConfig(echo_times=te, b0=b0[0], b0_dir=b0_dir, method=method)
    except InputError as exc:
        raise ArgumentError(f"{where}: {_QSM_COLUMNS.get(exc.where, exc.where)}", exc.problem) from None


def _run(args: argparse.Namespace) -> int:
    from mrinets.io import ensure_outdir

    table = Path(args.subjects)
    rows = _read_table(table, _COLUMNS[args.pipeline], args.part_id)
    out = Path(ensure_outdir(args.out))

    def resolve(value: str | None) -> str | None:
        return None if not value else str(table.parent / value)

    run = {"qsm": _run_qsm, "wmh": _run_wmh, "cmb": _run_cmb, "microstructure": _run_microstructure,
           "lowfield": _run_lowfield}[args.pipeline]
    return run(args, rows, resolve, out, table)


def _execute(args: argparse.Namespace, tasks, out: Path) -> int:
    """Run this part's share of the tasks and write its summary; exit status 1 if a subject failed."""
    from mrinets.batch import run_tasks, shard

    selected = shard(tasks, num_parts=args.num_parts, part_id=args.part_id)
    results = run_tasks(selected, workers=args.workers, scheduler=args.scheduler, quiet=args.quiet)
    return report(results, out / summary_name(args.part_id), quiet=args.quiet)


def _gather_csv(tasks, pattern: str) -> list[dict]:
    """The rows of every subject's CSV output, each with its subject."""
    rows = []
    for task in tasks:
        for path in sorted(task.outdir.glob(pattern)):
            with open(path, newline="", encoding="utf-8") as fh:
                rows += [{"subject": task.name, **{k: v for k, v in row.items() if k != "subject"}}
                         for row in csv.DictReader(fh)]
    return rows


def _run_qsm(args: argparse.Namespace, rows, resolve, out: Path, table: Path) -> int:
    from mrinets.batch import Task, refused_task
    from mrinets.errors import InputError
    from mrinets.pipelines import qsm

    tasks = []
    for row in rows:
        outdir = out / row["subject"]
        try:
            config = _qsm_config(row, f"{table}:{row.line}", args.method)
        except InputError as exc:  # this subject's numbers: reported in the summary, the others go on
            tasks.append(refused_task(row["subject"], outdir, exc))
            continue
        tasks.append(Task(name=row["subject"], outdir=outdir, run=functools.partial(
            qsm.predict_and_save, resolve(row["mag"]), resolve(row["phase"]), outdir, config=config,
            mask=resolve(row.get("mask")), labels=resolve(row.get("labels")))))
    return _execute(args, tasks, out)


def _run_wmh(args: argparse.Namespace, rows, resolve, out: Path, table: Path) -> int:
    from mrinets.batch import Task
    from mrinets.io import write_text
    from mrinets.pipelines import wmh

    config = wmh.WmhConfig(weights=args.weights, grow=False if args.no_grow else None)
    tasks = [Task(name=row["subject"], outdir=out / row["subject"], run=functools.partial(
        wmh.predict_and_save, resolve(row["t1"]), out / row["subject"], config=config)) for row in rows]
    status = _execute(args, tasks, out)
    measures = _gather_csv(tasks, "*_wmh.csv")
    if measures:
        write_text(out / _COHORT["wmh"], wmh.measures_table(measures))
    return status


def _run_cmb(args: argparse.Namespace, rows, resolve, out: Path, table: Path) -> int:
    import json

    from mrinets.batch import Task, refused_task
    from mrinets.errors import ArgumentError, InputError
    from mrinets.io import write_text
    from mrinets.io.tables import csv_text
    from mrinets.pipelines import cmb

    tasks = []
    for row in rows:
        outdir = out / row["subject"]
        try:
            config = cmb.CmbConfig(contrast=row["contrast"], weights=args.weights, space=args.space)
        except InputError as exc:
            tasks.append(refused_task(row["subject"], outdir, ArgumentError(f"{table}:{row.line}: contrast",
                                                                            exc.problem)))
            continue
        tasks.append(Task(name=row["subject"], outdir=outdir, run=functools.partial(
            cmb.predict_and_save, resolve(row["image"]), outdir, config=config, mask=resolve(row.get("mask")))))
    status = _execute(args, tasks, out)
    counts = []
    for task in tasks:
        for path in sorted(task.outdir.glob("*_cmb.json")):
            m = json.loads(path.read_text(encoding="utf-8"))
            counts.append({"subject": task.name, "image": m["input"], "contrast": m["contrast"], "count": m["count"],
                           **{f"count_{loc}": m["count_by_location"][loc] for loc in cmb.LOCATIONS},
                           "out_of_training_range": str(m["out_of_training_range"]).lower()})
    if counts:
        write_text(out / _COHORT["cmb"], csv_text(counts))
    return status


def _run_microstructure(args: argparse.Namespace, rows, resolve, out: Path, table: Path) -> int:
    import json

    from mrinets.batch import Task
    from mrinets.io import write_text
    from mrinets.pipelines import microstructure as ms

    config = ms.MicrostructureConfig(weights=args.weights)
    tasks = [Task(name=row["subject"], outdir=out / row["subject"], run=functools.partial(
        ms.predict_and_save, resolve(row["dwi"]), resolve(row["bval"]), resolve(row["bvec"]), out / row["subject"],
        config=config, mask=resolve(row.get("mask")))) for row in rows]
    status = _execute(args, tasks, out)
    keys = ["brain_ml"] + [f"{p}_{s}" for p in ms.PARAMETERS for s in ("mean", "median")]
    lines = ["\t".join(["subject", *keys, "resampled", "method", "network"])]
    for task in tasks:
        path = task.outdir / ms.OUTPUT_NAMES["measures"]
        if path.exists():
            m = json.loads(path.read_text())
            lines.append("\t".join([task.name, *(str(m[k]) for k in keys), str(m["resampled"]).lower(), m["method"],
                                     str(m.get("network") or "")]))
    if len(lines) > 1:
        write_text(out / _COHORT["microstructure"], "\n".join(lines) + "\n")
    return status


def _run_lowfield(args: argparse.Namespace, rows, resolve, out: Path, table: Path) -> int:
    from mrinets.batch import Task, refused_task
    from mrinets.errors import ArgumentError, InputError
    from mrinets.io import write_text
    from mrinets.pipelines import lowfield

    tasks = []
    for row in rows:
        outdir = out / row["subject"]
        contrast = row.get("contrast") or "t1"
        try:
            lowfield.check_contrast(contrast)
        except InputError as exc:
            tasks.append(refused_task(row["subject"], outdir, ArgumentError(f"{table}:{row.line}: contrast",
                                                                            exc.problem)))
            continue
        tasks.append(Task(name=row["subject"], outdir=outdir, run=functools.partial(
            lowfield.predict_and_save, resolve(row["image"]), outdir, contrast=contrast, weights=args.weights)))
    status = _execute(args, tasks, out)
    measures = _gather_csv(tasks, lowfield.OUTPUT_NAMES["table"])
    if measures:
        write_text(out / _COHORT["lowfield"], lowfield.csv_text(measures))
    return status


def report(results, summary: Path, *, quiet: bool) -> int:
    """Write the summary TSV, print failures; exit status 1 if any subject failed."""
    from mrinets.batch import write_summary

    write_summary(results, summary)
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        sys.stderr.write(f"mrinets: {r.name} failed: {r.message}\n")
    if not quiet:
        counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
        print(f"mrinets: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed; "
              f"summary in {summary}")
    return 1 if failed else 0
