"""Registry of phantom kinds, so the CLI and pipelines add kinds without argparse in the library.

A kind names its options (flag, type, default, help) and a ``make(seed=, out=,
**options)`` that writes the subject and returns the files written. The
command line maps ``mrinets phantom <kind> --seed N --out DIR [--option ...]``
onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PhantomOption", "PhantomKind", "PHANTOM_KINDS", "register"]


@dataclass(frozen=True)
class PhantomOption:
    """One option of a phantom kind: ``--flag`` on the command line, ``flag`` as keyword."""

    flag: str
    type: type
    default: Any
    help: str
    nargs: int | str | None = None

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")


@dataclass(frozen=True)
class PhantomKind:
    """A kind of synthetic subject and how to write one."""

    name: str
    help: str
    options: tuple[PhantomOption, ...]
    make: Callable[..., list[Path]]


PHANTOM_KINDS: dict[str, PhantomKind] = {}


def register(kind: PhantomKind) -> PhantomKind:
    """Add ``kind`` to the registry (names are unique)."""
    if kind.name in PHANTOM_KINDS:
        raise ValueError(f"phantom kind {kind.name!r} is already registered")
    PHANTOM_KINDS[kind.name] = kind
    return kind


def _make_head(*, seed: int, out: Path, voxel_size, slice_thickness, snr, contrasts, fast) -> list[Path]:
    from mrinets.data.phantoms.head import make_head

    crop = ((50, 146), (60, 172), (50, 140)) if fast else None
    subject = make_head(seed, voxel_size=tuple(voxel_size), slice_thickness=slice_thickness or None, snr=snr,
                        contrasts=tuple(contrasts), crop=crop)
    return subject.save(out)


def _make_qsm(*, seed: int, out: Path, voxel_size, te, b0, b0_dir, snr, crop, iron_scale=1.0,
              myelin_scale=1.0) -> list[Path]:
    from mrinets.data.phantoms.qsm import make_qsm_head

    phantom = make_qsm_head(seed, voxel_size=voxel_size, echo_times=tuple(te), b0=b0, b0_dir=tuple(b0_dir), snr=snr,
                            crop_mm=crop or None, iron_scale=iron_scale, myelin_scale=myelin_scale)
    return phantom.save(out)


def _make_qsm_scan(*, seed: int, out: Path, voxel_size, orientation, oblique, te, b0, b0_dir, snr, skull_pd,
                   air_smooth_mm, iron_scale, myelin_scale, fine_mm) -> list[Path]:
    from mrinets.data.phantoms.qsm import make_qsm_scan

    phantom = make_qsm_scan(seed, voxel_size=tuple(voxel_size), orientation=orientation, oblique_deg=tuple(oblique),
                            echo_times=tuple(te), b0=b0, b0_dir=tuple(b0_dir), snr=snr, skull_pd=skull_pd,
                            air_smooth_mm=air_smooth_mm, iron_scale=iron_scale, myelin_scale=myelin_scale,
                            fine_mm=fine_mm)
    return phantom.save(out)


def _make_wmh(*, seed: int, out: Path, severity, snr, flair_voxel, gross, no_pose, t1, lesions) -> list[Path]:
    from mrinets.data.phantoms.wmh import insert_wmh, make_wmh_subject

    if t1:
        from mrinets.io.nifti import load
        from mrinets.preprocess.register import register_to_mni

        image = load(t1, ndim=3)
        phantom = insert_wmh(image.data, image.affine, register_to_mni(image).matrix, seed,
                             severity=None if severity < 0 else severity, flair_voxel=tuple(flair_voxel),
                             gross=True if gross else None, lesions=lesions)
        return phantom.save(out)
    phantom = make_wmh_subject(seed, severity=None if severity < 0 else severity, snr=None if snr <= 0 else snr,
                               flair_voxel=tuple(flair_voxel), gross=True if gross else None, pose=not no_pose,
                               lesions=lesions)
    return phantom.save(out)


register(PhantomKind(
    name="head",
    help="deformed MNI152 head: T1w, T2w, FLAIR-like and GRE magnitude with tissue truth",
    options=(
        PhantomOption("voxel-size", float, (1.0, 1.0, 1.0), "voxel size in mm (x y z)", nargs=3),
        PhantomOption("slice-thickness", float, 0.0, "thick axial slices of this FWHM in mm (0: none)"),
        PhantomOption("snr", float, 30.0, "white-matter signal over noise std"),
        PhantomOption("contrasts", str, ["t1w", "t2w", "flair", "gre"], "contrasts to simulate", nargs="+"),
        PhantomOption("fast", bool, False, "build only a central box of the template (for quick looks)"),
    ),
    make=_make_head,
))

register(PhantomKind(
    name="qsm",
    help="susceptibility head: multi-echo GRE magnitude + wrapped phase, true chi, fields, nuclei labels",
    options=(
        PhantomOption("voxel-size", float, 1.0, "isotropic voxel size in mm"),
        PhantomOption("te", float, [0.004, 0.012, 0.020, 0.028], "echo times in seconds", nargs="+"),
        PhantomOption("b0", float, 3.0, "field strength in tesla"),
        PhantomOption("b0-dir", float, [0.0, 0.0, 1.0], "B0 direction in world coordinates", nargs=3),
        PhantomOption("snr", float, 100.0, "white-matter magnitude over noise std at the first echo"),
        PhantomOption("crop", float, 0.0, "keep a cube of this side (mm) around the deep grey nuclei (0: whole head)"),
        PhantomOption("iron-scale", float, 1.0, "nucleus iron (chi) scale; 0.2-0.4 for an infant-like brain"),
        PhantomOption("myelin-scale", float, 1.0, "white-matter chi scale; low in an unmyelinated infant brain"),
    ),
    make=_make_qsm,
))

register(PhantomKind(
    name="qsm-scan",
    help="susceptibility head acquired as scans vary: any voxel size, LAS/LPS storage, oblique grid, intravoxel "
         "dephasing; same outputs as qsm",
    options=(
        PhantomOption("voxel-size", float, [1.5, 1.5, 1.5], "voxel size in mm (x y z)", nargs=3),
        PhantomOption("orientation", str, "LAS", "storage orientation: RAS, LAS or LPS"),
        PhantomOption("oblique", float, [0.0, 0.0, 0.0], "rotation of the grid about world x y z, degrees", nargs=3),
        PhantomOption("te", float, [0.004, 0.012, 0.020, 0.028], "echo times in seconds", nargs="+"),
        PhantomOption("b0", float, 3.0, "field strength in tesla"),
        PhantomOption("b0-dir", float, [0.0, 0.0, 1.0], "B0 direction in world coordinates", nargs=3),
        PhantomOption("snr", float, 100.0, "white-matter magnitude over noise std at the first echo"),
        PhantomOption("skull-pd", float, 0.0, "proton density of bone (0: dark skull)"),
        PhantomOption("air-smooth-mm", float, 2.0, "Gaussian width of the air and bone borders, mm"),
        PhantomOption("iron-scale", float, 1.0, "nucleus iron (chi) scale"),
        PhantomOption("myelin-scale", float, 1.0, "white-matter chi scale"),
        PhantomOption("fine-mm", float, 1.0, "voxel size of the fine simulation grid, mm"),
    ),
    make=_make_qsm_scan,
))

register(PhantomKind(
    name="wmh",
    help="T1 with white-matter lesions, thick-slice FLAIR with an imperfect lesion label, 1 mm truth",
    options=(
        PhantomOption("severity", float, -1.0, "lesion load in [0, 1] (negative: drawn from the seed)"),
        PhantomOption("snr", float, 0.0, "white-matter signal over noise std (0: drawn in [15, 40])"),
        PhantomOption("flair-voxel", float, [0.9, 5.0], "FLAIR in-plane size and slice thickness in mm", nargs=2),
        PhantomOption("gross", bool, False, "force a grossly wrong FLAIR label"),
        PhantomOption("no-pose", bool, False, "keep the head in the template pose (no random scanner pose)"),
        PhantomOption("t1", str, "", "insert the lesions into this real T1 instead (registered to MNI first)"),
        PhantomOption("lesions", str, "wmh", "lesion model: wmh (small-vessel, one T1 level per subject), ms "
                                             "(as a real MS patient's lesions look on T1) or ms-flair (ms lesions "
                                             "outlined as on FLAIR, confluent lesions; docs/wmh.md)"),
    ),
    make=_make_wmh,
))


def _make_microstructure(*, seed: int, out: Path, scheme, voxel_size, snr, population, downsample) -> list[Path]:
    from mrinets.data.phantoms.microstructure import make_microstructure_subject, target_scheme

    if scheme == "lowq":
        scheme = target_scheme()
    elif scheme not in ("gtab_3shell", "gtab_isbi2013_2shell"):
        raise ValueError(f"--scheme must be gtab_3shell, gtab_isbi2013_2shell or lowq, got {scheme!r}")
    if population not in ("target", "auxiliary"):
        raise ValueError(f"--population must be target or auxiliary, got {population!r}")
    phantom = make_microstructure_subject(seed, scheme=scheme,
                                          voxel_mm=voxel_size, snr=snr, population=population,
                                          downsample=downsample)
    return phantom.save(out)


register(PhantomKind(
    name="microstructure",
    help="NODDI truth (ICVF, ISOVF, ODI, fibre directions) on the MNI anatomy and its multi-shell dMRI",
    options=(
        PhantomOption("scheme", str, "gtab_3shell",
                      "gtab_3shell (3 x 64 directions), gtab_isbi2013_2shell (27 + 36) or lowq (the network's 31)"),
        PhantomOption("voxel-size", float, 2.0, "isotropic voxel size of the truth in mm"),
        PhantomOption("snr", float, 30.0, "white-matter b=0 signal over noise std"),
        PhantomOption("population", str, "target", "target (clinical, subjects differ) or auxiliary (healthy)"),
        PhantomOption("downsample", int, 1, "acquire the dMRI in voxels this many times larger"),
    ),
    make=_make_microstructure,
))


def _make_cmb(*, seed: int, out: Path, voxel_size, crop, b0, te, snr, n_cmb) -> list[Path]:
    from mrinets.data.phantoms.cmb import make_cmb_subject

    phantom = make_cmb_subject(seed, voxel_size=voxel_size, crop_mm=crop, b0=b0 or None, te=te or None,
                               snr=snr or None, n_cmb=None if n_cmb < 0 else n_cmb)
    return phantom.save(out)


register(PhantomKind(
    name="cmb",
    help="microbleeds (paramagnetic spheres) and mimics in a box of brain: GRE magnitude, SWI and QSM with truth",
    options=(
        PhantomOption("voxel-size", float, 1.0, "isotropic voxel size in mm (simulated on half of it)"),
        PhantomOption("crop", float, 64.0, "side of the box of MNI anatomy in mm"),
        PhantomOption("b0", float, 0.0, "field strength in tesla (0: 1.5 or 3 drawn from the seed)"),
        PhantomOption("te", float, 0.0, "echo time in seconds (0: 15-30 ms drawn from the seed)"),
        PhantomOption("snr", float, 0.0, "white-matter SNR (0: 15-40 drawn from the seed)"),
        PhantomOption("n-cmb", int, -1, "number of microbleeds (negative: 0-6 drawn from the seed)"),
    ),
    make=_make_cmb,
))


def _make_lowfield(*, seed: int, out: Path, contrast, t1, voxel_size, snr) -> list[Path]:
    from mrinets.data.phantoms.lowfield import make_lowfield_pair, pair_from_t1
    from mrinets.physics.lowfield import LowFieldConfig

    config = LowFieldConfig(voxel_mm=tuple(voxel_size), snr=snr)
    if t1:
        from mrinets.io.nifti import load

        if contrast != "t1":
            raise ValueError("contrast must be t1 when a real T1 is given")
        image = load(t1, ndim=3)
        return pair_from_t1(image.data, image.affine, seed, config=config).save(out)
    return make_lowfield_pair(seed, contrast, config=config).save(out)


register(PhantomKind(
    name="lowfield",
    help="paired 64 mT / 3 T subject: low-field scan (own grid), both on the 2 mm working grid, tissue truth",
    options=(
        PhantomOption("contrast", str, "t1", "t1 or t2"),
        PhantomOption("t1", str, "", "scan this real 3 T T1 at 64 mT instead of a template subject"),
        PhantomOption("voxel-size", float, (1.6, 1.6, 5.0), "low-field voxel in mm (x y slice thickness)", nargs=3),
        PhantomOption("snr", float, 12.0, "low-field white-matter signal over noise std"),
    ),
    make=_make_lowfield,
))
