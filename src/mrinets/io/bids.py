"""Find acquisitions in a BIDS dataset with plain globbing (no pybids needed).

Multi-echo gradient echo follows BIDS 1.8+: one file per echo and part,
``sub-<l>[_ses-<l>][_acq-<l>][_run-<i>]_echo-<i>_part-<mag|phase>_MEGRE.nii[.gz]``,
each with a JSON sidecar holding ``EchoTime`` (s) and ``MagneticFieldStrength`` (T).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mrinets.errors import InputError, UnreadableFileError
from mrinets.io.output import note_input

__all__ = ["GreRun", "AnatRun", "DwiRun", "RunError", "find_gre_runs", "find_anat_runs", "find_dwi_runs",
           "derivative_dir", "write_dataset_description"]


@dataclass(frozen=True)
class RunError:
    """A run whose files or sidecars are incomplete: reported for it alone, the other runs go on."""

    subject: str
    session: str | None
    prefix: str
    error: InputError


OnError = Callable[[RunError], None] | None


def _report(on_error: OnError, subject: str, prefix: str, error: InputError) -> None:
    if on_error is None:
        raise error
    on_error(RunError(subject, _session(prefix), prefix, error))

_MEGRE = re.compile(r"^(?P<prefix>sub-[^_]+(?:_ses-[^_]+)?(?:_[a-z]+-[^_]+)*?)_echo-(?P<echo>\d+)"
                    r"(?P<between>(?:_[a-z]+-[^_]+)*?)_part-(?P<part>mag|phase)(?P<after>(?:_[a-z]+-[^_]+)*)"
                    r"_MEGRE\.nii(?:\.gz)?$")


@dataclass(frozen=True)
class GreRun:
    """One multi-echo GRE run: files per echo (sorted by echo time) and its parameters."""

    subject: str
    session: str | None
    prefix: str
    magnitude: tuple[Path, ...]
    phase: tuple[Path, ...]
    echo_times: tuple[float, ...]
    b0: float


def _sidecar(path: Path) -> dict:
    name = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    side = path.with_name(name + ".json")
    if not side.exists():
        raise UnreadableFileError(side, "JSON sidecar not found (EchoTime and MagneticFieldStrength are needed)")
    note_input(side)
    try:
        return json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UnreadableFileError(side, f"not readable JSON ({exc})") from None


def _number(meta: dict, key: str, path: Path) -> float:
    value = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(value, (int, float)) or value <= 0:
        raise InputError(path, f"sidecar has no positive {key} (got {value!r})")
    return float(value)


@dataclass(frozen=True)
class AnatRun:
    """One anatomical image (``anat/*_<suffix>.nii[.gz]``) and the BIDS prefix of its derivatives (the name
    without ``_<suffix>``)."""

    subject: str
    session: str | None
    prefix: str
    path: Path
    suffix: str


def _session(prefix: str) -> str | None:
    """``ses-<label>`` of a BIDS file prefix, or None."""
    match = re.search(r"_ses-([^_]+)", prefix)
    return f"ses-{match[1]}" if match else None


def _subjects(root: Path, participant_labels: Sequence[str] | None) -> list[str]:
    if not root.is_dir():
        raise UnreadableFileError(root, "not a folder" if root.exists() else "folder not found")
    if not (root / "dataset_description.json").is_file():
        raise InputError(root, "not a BIDS dataset (no dataset_description.json)")
    subjects = sorted(p.name for p in root.glob("sub-*") if p.is_dir())
    if participant_labels:
        wanted = list(dict.fromkeys(lab if lab.startswith("sub-") else f"sub-{lab}" for lab in participant_labels))
        missing = sorted(set(wanted) - set(subjects))
        if missing:
            raise InputError(root, f"participant(s) not in the dataset: {', '.join(missing)}")
        subjects = wanted
    return subjects


def _files(root: Path, participant_labels: Sequence[str] | None, pattern: str) -> Iterator[tuple[str, Path]]:
    """(subject, path) of every file matching ``pattern`` under the chosen participants, in name order."""
    for subject in _subjects(root, participant_labels):
        for path in sorted((root / subject).glob(pattern)):
            yield subject, path


def find_anat_runs(bids_dir: str | Path, suffix: str, *,
                   participant_labels: Sequence[str] | None = None) -> list[AnatRun]:
    """Every ``anat/*_<suffix>.nii[.gz]`` (``T1w``, ``T2starw``, ...) of the chosen participants, in name order."""
    runs = []
    for subject, path in _files(Path(bids_dir), participant_labels, f"**/anat/*_{suffix}.nii*"):
        prefix = re.sub(rf"_{suffix}\.nii(\.gz)?$", "", path.name)
        runs.append(AnatRun(subject=subject, session=_session(prefix), prefix=prefix, path=path, suffix=suffix))
    return runs


@dataclass(frozen=True)
class DwiRun:
    """One diffusion series with its FSL gradient files and the BIDS prefix (the name without ``_dwi``)."""

    subject: str
    session: str | None
    prefix: str
    path: Path
    bval: Path
    bvec: Path


def find_dwi_runs(bids_dir: str | Path, *, participant_labels: Sequence[str] | None = None,
                  on_error: OnError = None) -> list[DwiRun]:
    """Every ``dwi/*_dwi.nii[.gz]`` with its ``.bval`` and ``.bvec`` beside it, in name order.

    A run missing one of them raises, or with ``on_error`` is passed to it as a :class:`RunError` and left out.
    """
    runs = []
    for subject, path in _files(Path(bids_dir), participant_labels, "**/dwi/*_dwi.nii*"):
        stem = re.sub(r"\.nii(\.gz)?$", "", path.name)
        bval, bvec = path.with_name(f"{stem}.bval"), path.with_name(f"{stem}.bvec")
        prefix = stem[: -len("_dwi")]
        absent = [table.name for table in (bval, bvec) if not table.exists()]
        if absent:
            _report(on_error, subject, prefix, InputError(path, f"has no {' or '.join(absent)} beside it"))
            continue
        runs.append(DwiRun(subject=subject, session=_session(prefix), prefix=prefix, path=path, bval=bval,
                           bvec=bvec))
    return runs


def find_gre_runs(bids_dir: str | Path, *, participant_labels: Sequence[str] | None = None,
                  on_error: OnError = None) -> list[GreRun]:
    """All multi-echo GRE runs with magnitude and phase, per subject and session.

    Parameters
    ----------
    bids_dir : path-like
        Root of the BIDS dataset.
    participant_labels : sequence of str, optional
        Labels with or without ``sub-``; default every subject.
    on_error : callable, optional
        Called with a :class:`RunError` for each run that lacks a part, an echo
        or its sidecar values, which is then left out; default: raise.

    Raises
    ------
    InputError
        When the folder is not a BIDS dataset, a label is absent, or (without
        ``on_error``) a run is incomplete.
    """
    root = Path(bids_dir)
    subjects = _subjects(root, participant_labels)
    runs = []
    for subject in subjects:
        groups: dict[str, dict[str, dict[int, Path]]] = defaultdict(lambda: {"mag": {}, "phase": {}})
        for path in sorted((root / subject).glob("**/anat/*_MEGRE.nii*")):
            match = _MEGRE.match(path.name)
            if match:
                key = match["prefix"] + match["between"] + match["after"]
                groups[key][match["part"]][int(match["echo"])] = path
        for prefix, parts in sorted(groups.items()):
            if sorted(parts["mag"]) != sorted(parts["phase"]):
                _report(on_error, subject, prefix, InputError(
                    root / subject, f"{prefix}: magnitude echoes {sorted(parts['mag'])} do not match phase echoes "
                                    f"{sorted(parts['phase'])}"))
                continue
            echoes = sorted(parts["mag"])
            try:
                metas = [_sidecar(parts["mag"][e]) for e in echoes]
                tes = [_number(m, "EchoTime", parts["mag"][e]) for m, e in zip(metas, echoes)]
                b0 = _number(metas[0], "MagneticFieldStrength", parts["mag"][echoes[0]])
            except InputError as exc:
                _report(on_error, subject, prefix, exc)
                continue
            order = sorted(range(len(echoes)), key=lambda i: tes[i])
            runs.append(GreRun(
                subject=subject,
                session=_session(prefix),
                prefix=prefix,
                magnitude=tuple(parts["mag"][echoes[i]] for i in order),
                phase=tuple(parts["phase"][echoes[i]] for i in order),
                echo_times=tuple(tes[i] for i in order),
                b0=b0,
            ))
    return runs


def derivative_dir(out_dir: str | Path, subject: str, session: str | None, datatype: str = "anat") -> Path:
    """``out_dir/sub-X[/ses-Y]/datatype``, the BIDS derivatives layout."""
    path = Path(out_dir) / subject
    return (path / session if session else path) / datatype


def write_dataset_description(out_dir: str | Path, *, pipeline: str, version: str) -> Path:
    """The ``dataset_description.json`` a BIDS derivatives folder needs."""
    from mrinets.io.output import write_json

    return write_json(Path(out_dir) / "dataset_description.json", {
        "Name": f"mrinets {pipeline}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mrinets", "Version": version}],
    })
