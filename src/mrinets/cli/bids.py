"""``mrinets bids``: a BIDS App (participant level) over the available pipelines."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from mrinets.cli.batch import add_scale_options, report
from mrinets.cli.common import COMMANDS, add_common

NAME = "bids"
PIPELINES = ("qsm", "wmh", "cmb", "microstructure")
# BIDS suffixes the CMB pipeline reads, and their contrast. SWI has no suffix in BIDS yet: ``swi`` is the one of
# its proposal (BEP004).
CMB_SUFFIXES = {"swi": "swi", "T2starw": "gre", "Chimap": "qsm"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME,
        help=COMMANDS[NAME],
        description="Finds each participant's inputs (multi-echo GRE with part-mag/part-phase and JSON "
        "sidecars for qsm, *_T1w for wmh, *_swi, *_T2starw or *_Chimap for cmb, *_dwi with .bval/.bvec for "
        "microstructure), runs them as independent tasks and writes a BIDS derivatives folder.",
    )
    p.add_argument("bids_dir", help="root of the BIDS dataset")
    p.add_argument("output_dir", help="derivatives folder to write")
    p.add_argument("analysis_level", choices=["participant"], help="only participant level exists")
    p.add_argument("--participant-label", nargs="+", help="labels to process (with or without sub-)")
    p.add_argument("--pipelines", nargs="+", choices=PIPELINES, default=list(PIPELINES))
    p.add_argument("--method", choices=("tkd", "tv", "pedqnet"), default="tv", help="QSM dipole inversion (default tv)")
    p.add_argument("--weights", help="WMH weights file (default: the shipped model)")
    p.add_argument("--no-grow", action="store_true", help="WMH: do not grow the trimmed mask (wmh predict --no-grow)")
    p.add_argument("--cmb-weights", help="CMB weights file (default: the shipped model)")
    p.add_argument("--noddi-weights", help="microstructure weights file (default: the shipped model)")
    add_scale_options(p)
    add_common(p)
    p.set_defaults(func=_run)


def _done_marker(task: str) -> str:
    """The finished-marker of one run's task: runs of a session share a derivatives folder, so each has its own."""
    return f".mrinets-done-{task}"


def _run(args: argparse.Namespace) -> int:
    from mrinets import __version__
    from mrinets.batch import Task, refused_task, run_tasks, shard
    from mrinets.cli.batch import summary_name
    from mrinets.errors import InputError
    from mrinets.io import ensure_outdir
    from mrinets.io.bids import (derivative_dir, find_anat_runs, find_dwi_runs, find_gre_runs,
                                 write_dataset_description)
    from mrinets.io.output import refuse_inside_raw_bids
    from mrinets.pipelines import cmb, microstructure, qsm, wmh

    refuse_inside_raw_bids(args.output_dir, args.bids_dir)
    labels = args.participant_label
    tasks = []

    def refused(suffix: str, datatype: str):
        """Runs whose files are incomplete become failed rows of the summary; the others go on."""
        def add(problem) -> None:
            outdir = derivative_dir(args.output_dir, problem.subject, problem.session, datatype)
            name = problem.prefix + suffix
            tasks.append(refused_task(name, outdir, problem.error, marker=_done_marker(name)))
        return add

    if "qsm" in args.pipelines:
        for run in find_gre_runs(args.bids_dir, participant_labels=labels,
                                 on_error=refused("", "anat")):
            outdir = derivative_dir(args.output_dir, run.subject, run.session)
            try:
                config = qsm.QsmConfig(echo_times=run.echo_times, b0=run.b0, method=args.method)
            except InputError as exc:
                tasks.append(refused_task(run.prefix, outdir, InputError(run.magnitude[0], exc.problem),
                                          marker=_done_marker(run.prefix)))
                continue
            tasks.append(Task(
                name=run.prefix,
                outdir=outdir,
                run=functools.partial(qsm.predict_and_save, list(run.magnitude), list(run.phase), outdir,
                                      config=config, names=qsm.bids_output_names(run.prefix)),
                marker=_done_marker(run.prefix),
            ))
    if "wmh" in args.pipelines:
        config = wmh.WmhConfig(weights=args.weights, grow=False if args.no_grow else None)
        for t1 in find_anat_runs(args.bids_dir, "T1w", participant_labels=labels):
            outdir = derivative_dir(args.output_dir, t1.subject, t1.session)
            name = f"{t1.prefix}_wmh"
            tasks.append(Task(name=name, outdir=outdir, marker=_done_marker(name), run=functools.partial(
                wmh.predict_and_save, t1.path, outdir, config=config, names=wmh.bids_output_names(t1.prefix))))
    if "cmb" in args.pipelines:
        for suffix, contrast in CMB_SUFFIXES.items():
            config = cmb.CmbConfig(contrast=contrast, weights=args.cmb_weights)
            for image in find_anat_runs(args.bids_dir, suffix, participant_labels=labels):
                outdir = derivative_dir(args.output_dir, image.subject, image.session)
                name = f"{image.prefix}_{suffix}"
                tasks.append(Task(name=f"{name}_cmb", outdir=outdir, marker=_done_marker(f"{name}_cmb"),
                                  run=functools.partial(cmb.predict_and_save, image.path, outdir, config=config,
                                                        name=name)))
    if "microstructure" in args.pipelines:
        config = microstructure.MicrostructureConfig(weights=args.noddi_weights)
        for run in find_dwi_runs(args.bids_dir, participant_labels=labels,
                                 on_error=refused("_noddi", "dwi")):
            outdir = derivative_dir(args.output_dir, run.subject, run.session, "dwi")
            tasks.append(Task(name=f"{run.prefix}_noddi", outdir=outdir, marker=_done_marker(f"{run.prefix}_noddi"),
                              run=functools.partial(microstructure.predict_and_save, run.path, run.bval, run.bvec,
                                                    outdir, config=config,
                                                    names=microstructure.bids_output_names(run.prefix))))
    if not tasks:
        raise InputError(args.bids_dir, "no input found for the chosen pipelines (qsm: *_echo-<n>_part-mag/phase_"
                                        "MEGRE.nii.gz; wmh: *_T1w.nii.gz; cmb: *_swi, *_T2starw or "
                                        "*_Chimap.nii.gz; microstructure: *_dwi.nii.gz)")
    out = ensure_outdir(args.output_dir)
    selected = shard(tasks, num_parts=args.num_parts, part_id=args.part_id)
    results = run_tasks(selected, workers=args.workers, scheduler=args.scheduler, quiet=args.quiet)
    write_dataset_description(out, pipeline="+".join(args.pipelines), version=__version__)
    return report(results, Path(out) / summary_name(args.part_id), quiet=args.quiet)
