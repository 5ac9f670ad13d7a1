"""``mrinets demo``: every available pipeline on built-in data, with an HTML report."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from mrinets.cli.common import COMMANDS, add_common, nonnegative_int

NAME = "demo"
log = logging.getLogger("mrinets")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        NAME,
        help=COMMANDS[NAME],
        description="Builds synthetic subjects from the MNI152 template shipped with nilearn, runs each "
        "available pipeline on them, scores the results against the known truth and writes index.html.",
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--seed", type=nonnegative_int, default=2026, help="seed of the demo subjects")
    add_common(p)
    p.set_defaults(func=_run)


def _demo_phantom(out: Path, seed: int) -> list:
    import numpy as np

    from mrinets.data.phantoms.head import make_head
    from mrinets.io import Image
    from mrinets.report import Section, qc_png

    subject = make_head(seed)
    paths = subject.save(out / "phantom_head")
    images = []
    for name in subject.images:
        png = qc_png(Image(subject.images[name], subject.affine), out / "phantom_head" / f"qc_{name}.png",
                     contours=subject.wm > 0.5, title=f"phantom {name} (WM outline)")
        images.append(png)
    voxel_ml = abs(float(np.linalg.det(subject.affine[:3, :3]))) / 1000.0
    measures = {"seed": seed, "grid": list(subject.gm.shape), "brain_ml": float(subject.mask.sum() * voxel_ml),
                "gm_ml": float(subject.gm.sum() * voxel_ml), "wm_ml": float(subject.wm.sum() * voxel_ml)}
    return [Section(title="Phantom lab: a deformed MNI152 head", images=images, measures=measures,
                    text="T1w, T2w, FLAIR-like and GRE magnitude mixed from the real MNI152 tissue maps after a "
                         "random affine and smooth deformation, with bias field and Rician noise.",
                    links=paths)]


def _demo_qsm(out: Path, seed: int) -> list:
    from mrinets.data.phantoms.qsm import make_qsm_head
    from mrinets.pipelines import qsm
    from mrinets.report import Section

    phantom_dir = out / "qsm_phantom"
    phantom = make_qsm_head(seed, voxel_size=2.0)
    phantom.save(phantom_dir)
    sections = []
    for method in qsm.METHODS:
        tic = time.perf_counter()
        config = qsm.QsmConfig(echo_times=phantom.echo_times, b0=phantom.b0, method=method)
        result = qsm.predict(phantom_dir / "mag.nii.gz", phantom_dir / "phase.nii.gz", config=config,
                             labels=phantom_dir / "labels.nii.gz")
        run_dir = out / f"qsm_{method}"
        paths = result.save(run_dir)
        scores = qsm.evaluate(run_dir / "chi.nii.gz", phantom_dir / "chi.nii.gz", mask=run_dir / "mask.nii.gz",
                              labels=phantom_dir / "labels.nii.gz")
        roi = scores.pop("roi")
        inside = scores.pop("nuclei", {})
        sharp = scores.pop("edge_sharpness_per_mm", {})
        measures = {**scores, "nuclei nrmse_percent": inside.get("nrmse_percent"),
                    "edge sharpness / truth": sharp["pred"] / sharp["truth"] if sharp else None,
                    "seconds": round(time.perf_counter() - tic, 2),
                    **{f"{name} error ppm": v["error_ppm"] for name, v in roi.items()}}
        sections.append(Section(
            title=f"QSM ({method.upper()}) on a 2 mm susceptibility phantom",
            images=[p for p in paths if p.suffix == ".png"], measures=measures, links=paths,
            text="Magnitude + wrapped phase (4 echoes, 3 T) simulated with the dipole model from a head with "
                 "iron-rich nuclei, veins, a calcification and air/bone outside the brain; scored against the "
                 "true chi (2016 QSM challenge measures, in the V-SHARP mask).",
        ))
    return sections


def _demo_wmh(out: Path, seed: int) -> list:
    import numpy as np

    from mrinets.data.phantoms.wmh import make_wmh_subject
    from mrinets.io import Image
    from mrinets.pipelines import wmh
    from mrinets.report import Section

    phantom = make_wmh_subject(seed, pose=True, severity=0.7)
    phantom_paths = phantom.save(out / "wmh_phantom")
    tic = time.perf_counter()
    t1 = Image(phantom.t1, phantom.t1_affine, path=out / "wmh_phantom" / "t1.nii.gz")
    result = wmh.predict(t1)
    paths = result.save(out / "wmh")
    voxel_ml = float(np.prod(t1.voxel_size)) / 1000.0
    scores = wmh.score_masks(result.mask, phantom.truth_mask, voxel_ml)
    measures = {"seconds": round(time.perf_counter() - tic, 2), **scores,
                **{k: v for k, v in result.measures.items() if k.endswith("_ml") and k.startswith("wmh_")}}
    return [Section(
        title="WMH on T1, taught from thick-slice FLAIR labels",
        images=[p for p in paths if p.suffix == ".png"], measures=measures, links=paths + phantom_paths,
        text="A 1 mm T1 with periventricular and deep lesions in a random scanner pose: registered to MNI152, "
             "segmented by the shipped network (trained only from imperfect 0.9 x 0.9 x 5 mm FLAIR labels), "
             "brought back to its own grid and scored against the 1 mm truth.",
    )]


def _demo_microstructure(out: Path, seed: int) -> list:
    from mrinets.io.nifti import from_array
    from mrinets.pipelines import microstructure as ms
    from mrinets.pipelines.microstructure import experiment as ex
    from mrinets.report import Section

    subject = ex.target_subject(ex.TEST_SEED_START + 1000 + seed)
    image = from_array(subject.lq_dwi, subject.affine)
    mask = from_array(subject.mask.astype("float32"), subject.affine)
    sections = []
    for method, title in (("network", "network (pretrained + fine-tuned)"), ("fit", "reference fit")):
        result = ms.predict(image, subject.lq_scheme, mask, config=ms.MicrostructureConfig(method=method))
        paths = result.save(out / f"microstructure_{method}")
        scores = {k: round(v, 4) for k, v in ex.score(result.maps, subject).items() if not k.startswith("mae_hq")}
        sections.append(Section(
            title=f"NODDI from a 31-volume scan: {title}",
            images=[p for p in paths if p.suffix == ".png"], measures={"seconds": result.measures["seconds"],
                                                                       **scores}, links=paths,
            text="A held-out 3 mm phantom of the target population scanned with 31 volumes (b = 1500 x 12, "
                 "2500 x 18, one b=0), SNR 20; ICVF, ISOVF and ODI scored in grey and white matter against "
                 "the truth (mean absolute error).",
        ))
    return sections


def _demo_cmb(out: Path, seed: int) -> list:
    from mrinets.data.phantoms.cmb import make_cmb_subject
    from mrinets.io.nifti import from_array
    from mrinets.metrics.detection import cluster_detection
    from mrinets.pipelines import cmb
    from mrinets.report import Section

    phantom = make_cmb_subject(seed, n_cmb=4)
    phantom_paths = phantom.save(out / "cmb_phantom")
    sections = []
    for contrast in cmb.CONTRASTS:
        tic = time.perf_counter()
        image = from_array(phantom.images[contrast], phantom.affine)
        result = cmb.predict(image, cmb.CmbConfig(contrast=contrast, device="cpu"), mask=phantom.mask,
                             name=contrast)
        paths = result.save(out / f"cmb_{contrast}")
        scores = cluster_detection(result.labels, phantom.cmb_labels)
        sections.append(Section(
            title=f"Microbleeds on {contrast.upper()}", images=[p for p in paths if p.suffix == ".png"],
            measures={"seconds": round(time.perf_counter() - tic, 2), "found": result.count, **scores},
            links=paths + (phantom_paths if contrast == cmb.CONTRASTS[0] else []),
            text="A 64 mm box of brain with microbleeds, veins, a calcification and flow voids simulated through "
                 "the dipole model; candidates, the distilled student and the clean-up, scored cluster-wise.",
        ))
    return sections


def _demo_lowfield(out: Path, seed: int) -> list:
    from mrinets.data.phantoms.lowfield import make_lowfield_pair
    from mrinets.pipelines import lowfield
    from mrinets.report import Section

    pair = make_lowfield_pair(seed, "t1")
    pair_paths = pair.save(out / "lowfield_phantom")
    tic = time.perf_counter()
    result = lowfield.predict(out / "lowfield_phantom" / "lowfield.nii.gz", contrast="t1", device="cpu")
    paths = result.save(out / "lowfield")
    seconds = round(time.perf_counter() - tic, 2)
    scores = lowfield.evaluate_pairs({"synthetic": lowfield.load_model(contrast="t1")}, [pair])["methods"]
    measures = {"seconds": seconds, **{f"{m} {name}": scores[name][m] for name in ("lowfield", "synthetic")
                                       for m in ("ssim", "psnr", "nrmse")}}
    return [Section(
        title="64 mT T1 to synthetic 3 T (LoHiResGAN)", images=[p for p in paths if p.suffix == ".png"],
        measures=measures, links=paths + pair_paths,
        text="A warped MNI subject scanned by the 64 mT model (1.6 x 1.6 x 5 mm, low-field contrast, noise, bias) "
             "translated by the shipped generator and scored against its 3 T image inside the brain.",
    )]


DEMOS = (("phantom", _demo_phantom), ("qsm", _demo_qsm), ("wmh", _demo_wmh),
         ("microstructure", _demo_microstructure), ("cmb", _demo_cmb), ("lowfield", _demo_lowfield))


def _run(args: argparse.Namespace) -> int:
    import sys

    from mrinets.io import ensure_outdir
    from mrinets.report import write_html_report

    out = ensure_outdir(args.out)
    sections = []
    for name, demo in DEMOS:
        log.info("demo: %s", name)
        sections.extend(demo(out, args.seed))
    report = write_html_report(out / "index.html", title="mrinets demo", sections=sections,
                               meta={"command": " ".join(["mrinets", *sys.argv[1:]]), "seed": args.seed})
    if not args.quiet:
        print(f"mrinets demo: report written to {report}")
    return 0
