"""``finescale synth ct``: procedural chest CT phantoms written exactly as CT-RATE ships its data.

Layout under ``out``::

    volumes/<train|valid>/<patient>/<patient>_<scan>/<patient>_<scan>_<recon>.nii.gz   int16 stored values
    labels.csv       VolumeName + the 18 label columns (0/1, from a noisy report classifier)
    metadata.csv     VolumeName, RescaleSlope, RescaleIntercept, XYSpacing "[y, x]", ZSpacing, + scanner columns
    train.json, val.json, test.json, external.json   manifests: one record per volume

HU = RescaleSlope x stored + RescaleIntercept from metadata.csv; a few volumes instead carry the scaling in their
NIfTI header (or store HU as they are) and have no metadata row, as plain NIfTI files do. A patient has 1-2 scans of
1-2 reconstructions each; splits are by patient. Scanner A's patients make train/val/test (CT-RATE's ``train_`` names
for train and val, ``valid_`` for test); every scanner-B patient goes to ``external`` (``valid_`` names), the held-out
scanner of VLM3D's external test set. Byte-identical for a seed whatever ``workers`` is: each volume renders from its
own RNG streams and is gzipped without a timestamp.
"""

from __future__ import annotations

import csv
import gzip
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from finescale.data.ct_io import LABELS, volume_relpath
from finescale.data.stratify import iterative_stratification
from finescale.synth import ct_labels
from finescale.synth.ct_phantom import DEFAULT_SHAPE, SIGNATURE_STRENGTH, default_spacing, render_volume
from finescale.synth.ct_scanner import SCANNERS

SPLITS = ("train", "val", "test", "external")
SPLIT_SHARES = {"val": 0.12, "test": 0.2}  # of scanner A's patients; train takes the rest
EXTERNAL_SHARE = 0.15  # of all patients: scanned on scanner B
SECOND_SCAN, SECOND_RECON = 0.4, 0.5  # chance that a patient has a second scan, that a scan has a second reconstruction
# How volumes store their values: (share, RescaleSlope, RescaleIntercept, where the scaling lives).
STORAGE = {
    "signed": (0.55, 1.0, -1024.0, "csv"),
    "unsigned": (0.22, 1.0, -8192.0, "csv"),
    "half": (0.10, 0.5, -1024.0, "csv"),
    "header": (0.08, 1.0, -1024.0, "header"),  # NIfTI scl_slope / scl_inter, no metadata row
    "plain": (0.05, 1.0, 0.0, "none"),  # stored values are HU, no metadata row
}
GZIP_LEVEL = 1  # nibabel's default: noise barely compresses further, and level 6 takes 2.5x longer


@dataclass(frozen=True)
class VolumeJob:
    """Everything needed to render and write one volume, independent of any other."""

    index: int
    name: str  # CT-RATE VolumeName, e.g. train_3_a_1.nii.gz
    patient: str
    split: str
    scanner: str
    kernel: int
    patient_seed: tuple[int, ...]
    scan_seed: tuple[int, ...]
    volume_seed: tuple[int, ...]
    findings: tuple[bool, ...]  # what the volume shows
    labels: tuple[int, ...]  # what the report says
    spacing: tuple[float, float, float]  # (z, y, x) mm
    thickness_mm: float
    storage: str


def _split_patients(patient_labels: np.ndarray, rng: np.random.Generator) -> list[str]:
    """A split per patient: scanner B's share to ``external``, then val/test shares of the rest (at least one each when
    there are enough patients), stratified on the labels of the patient's scans so that every split holds its share
    of each label's positives (:func:`~finescale.data.stratify.iterative_stratification`)."""
    n_patients = len(patient_labels)
    n_ext = max(1, round(EXTERNAL_SHARE * n_patients)) if n_patients >= 4 else 0
    n_a = n_patients - n_ext
    n_val = max(1, round(SPLIT_SHARES["val"] * n_a)) if n_a >= 3 else 0
    n_test = max(1, round(SPLIT_SHARES["test"] * n_a)) if n_a >= 3 else 0
    sizes = {"external": n_ext, "val": n_val, "test": n_test, "train": n_a - n_val - n_test}
    return iterative_stratification(patient_labels, sizes, rng)


def _storage_schemes(n: int, rng: np.random.Generator) -> list[str]:
    """Storage scheme per volume: STORAGE's shares by largest remainder (each scheme at least once from n >= 10)."""
    names = list(STORAGE)
    exact = np.array([STORAGE[k][0] for k in names]) * n
    counts = np.floor(exact).astype(int)
    if n >= len(names) * 2:
        counts = np.maximum(counts, 1)
    for i in np.argsort(-(exact - np.floor(exact))):
        if counts.sum() >= n:
            break
        counts[i] += 1
    while counts.sum() > n:
        counts[int(np.argmax(counts))] -= 1
    schemes = [k for k, c in zip(names, counts, strict=True) for _ in range(c)]
    return [schemes[i] for i in rng.permutation(n)]


def plan_volumes(n: int, seed: int, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> list[VolumeJob]:
    """Patients, scans, reconstructions, splits, findings and labels of ``n`` volumes (cheap: nothing rendered)."""
    rng = np.random.default_rng([seed, 0])
    structure: list[list[int]] = []  # per patient: reconstructions per scan
    while sum(map(sum, structure)) < n:
        structure.append([1 + int(rng.random() < SECOND_RECON) for _ in range(1 + int(rng.random() < SECOND_SCAN))])
    excess = sum(map(sum, structure)) - n
    while excess > 0:  # trim the last patient's reconstructions, then scans, to hit n exactly
        last = structure[-1]
        if last[-1] > 1:
            last[-1] -= 1
        else:
            last.pop()
        excess -= 1
    # findings and reported labels first (their RNG streams are the patient's and the scan's own), then the split
    found = [ct_labels.sample_findings(np.random.default_rng([seed, 1, p]), len(r)) for p, r in enumerate(structure)]
    scan_rngs = [[np.random.default_rng([seed, 2, p, s]) for s in range(len(r))] for p, r in enumerate(structure)]
    reported = [
        [ct_labels.report_labels(f, g) for f, g in zip(fs, gs, strict=True)]
        for fs, gs in zip(found, scan_rngs, strict=True)
    ]
    splits = _split_patients(np.array([np.any(r, axis=0) for r in reported]), rng)
    storage = _storage_schemes(n, rng)
    counters = {"train": 0, "valid": 0}
    jobs: list[VolumeJob] = []
    for p, (recons, split) in enumerate(zip(structure, splits, strict=True)):
        prefix = "train" if split in ("train", "val") else "valid"
        counters[prefix] += 1
        patient = f"{prefix}_{counters[prefix]}"
        scanner = "B" if split == "external" else "A"
        for s, n_recon in enumerate(recons):
            scan_rng = scan_rngs[p][s]
            labels = tuple(int(v) for v in reported[p][s])
            base = default_spacing(scanner, shape)
            xy = round(base[1] * scan_rng.uniform(0.93, 1.07), 4)
            spacing = (round(base[0] * scan_rng.uniform(0.95, 1.05), 4), xy, xy)
            for r in range(n_recon):
                thickness = spacing[0] * (1.0 if r == 0 else float(scan_rng.uniform(1.0, 1.3)))
                name = f"{patient}_{'ab'[s]}_{r + 1}.nii.gz"
                jobs.append(VolumeJob(
                    index=len(jobs), name=name, patient=patient, split=split, scanner=scanner, kernel=r,
                    patient_seed=(seed, 1, p), scan_seed=(seed, 2, p, s), volume_seed=(seed, 3, len(jobs)),
                    findings=tuple(bool(f) for f in found[p][s]), labels=labels, spacing=spacing,
                    thickness_mm=round(thickness, 3), storage=storage[len(jobs)],
                ))  # fmt: skip
    return jobs


def metadata_row(job: VolumeJob) -> dict[str, Any] | None:
    """The volume's metadata.csv row as :func:`~finescale.data.ct_io.read_metadata_csv` returns it, or ``None``."""
    _, slope, intercept, where = STORAGE[job.storage]
    if where != "csv":
        return None
    model = SCANNERS[job.scanner]
    return {
        "VolumeName": job.name, "RescaleSlope": slope, "RescaleIntercept": intercept,
        "XYSpacing": [job.spacing[1], job.spacing[2]], "ZSpacing": job.spacing[0],
        "Manufacturer": model.manufacturer, "ConvolutionKernel": model.kernels[job.kernel].name,
        "SliceThickness": job.thickness_mm,
    }  # fmt: skip


def nifti_bytes(hu: np.ndarray, spacing: tuple[float, float, float], storage: str) -> bytes:
    """A gzipped NIfTI-1 of ``hu`` (Z, Y, X) stored as int16 by ``storage``; the gzip stream has no timestamp."""
    import nibabel as nib

    _, slope, intercept, where = STORAGE[storage]
    stored = np.clip(np.rint((hu - intercept) / slope), -32768, 32767).astype(np.int16)
    sz, sy, sx = spacing
    # array axes (x, y, z) run to the patient's left, back and feet: an LPI orientation in NIfTI's RAS+ world
    img = nib.Nifti1Image(np.transpose(stored, (2, 1, 0)), np.diag([-sx, -sy, -sz, 1.0]))
    img.header.set_data_dtype(np.int16)
    img.header.set_xyzt_units("mm")
    if where == "header":
        img.header.set_slope_inter(slope, intercept)
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def _write_volume(job: VolumeJob, volumes: str, shape: tuple[int, int, int], strength: float) -> int:
    hu = render_volume(
        job.findings, patient_seed=job.patient_seed, scan_seed=job.scan_seed, volume_seed=job.volume_seed,
        shape=shape, spacing=job.spacing, scanner=job.scanner, kernel=job.kernel, thickness_mm=job.thickness_mm,
        strength=strength,
    )  # fmt: skip
    path = Path(volumes) / volume_relpath(job.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = nifti_bytes(hu, job.spacing, job.storage)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a killed run never leaves a half volume under the real name
    return len(data)


def _write_csvs(out: Path, jobs: list[VolumeJob]) -> None:
    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["VolumeName", *LABELS])
        w.writerows([job.name, *job.labels] for job in jobs)
    rows = [row for row in map(metadata_row, jobs) if row is not None]
    columns = ["VolumeName", "RescaleSlope", "RescaleIntercept", "XYSpacing", "ZSpacing", "Manufacturer",
               "ConvolutionKernel", "SliceThickness"]  # fmt: skip
    with (out / "metadata.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        for row in rows:
            w.writerow({**row, "XYSpacing": f"[{row['XYSpacing'][0]}, {row['XYSpacing'][1]}]"})


def _write_manifests(out: Path, jobs: list[VolumeJob]) -> None:
    for split in SPLITS:
        records = []
        for job in (j for j in jobs if j.split == split):
            record: dict[str, Any] = {"volume": f"volumes/{volume_relpath(job.name)}", "name": job.name,
                                      "patient": job.patient, "labels": list(job.labels)}  # fmt: skip
            row = metadata_row(job)
            if row is not None:
                record["metadata"] = row
            records.append(record)
        lines = ",\n".join(" " + json.dumps(r) for r in records)  # one record per line: diffable and greppable
        (out / f"{split}.json").write_text(f"[\n{lines}\n]\n" if records else "[]\n")


def generate_ct(
    out: str | Path,
    n: int = 60,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    workers: int = 2,
    strength: float = SIGNATURE_STRENGTH,
) -> dict[str, Any]:
    """Write ``n`` phantom volumes of ``shape`` (Z, Y, X) in CT-RATE's layout under ``out`` (see the module doc).

    Returns counts of volumes and patients per split, label prevalence (reported labels), bytes and seconds."""
    start = time.perf_counter()
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not strength > 0:
        raise ValueError(f"strength must be above 0, got {strength}")
    out = Path(out)
    volumes = out / "volumes"
    volumes.mkdir(parents=True, exist_ok=True)
    jobs = plan_volumes(n, seed, tuple(shape))
    job = partial(_write_volume, volumes=str(volumes), shape=tuple(shape), strength=strength)
    if workers > 1 and n > 1:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        with mp.get_context(method).Pool(min(workers, n)) as pool:
            sizes = pool.map(job, jobs, chunksize=1)
    else:
        sizes = [job(j) for j in jobs]
    _write_csvs(out, jobs)
    _write_manifests(out, jobs)
    labels = np.array([j.labels for j in jobs])
    return {
        "out": str(out),
        "counts": {s: sum(j.split == s for j in jobs) for s in SPLITS},
        "patients": {s: len({j.patient for j in jobs if j.split == s}) for s in SPLITS},
        "prevalence": {name: round(float(p), 4) for name, p in zip(LABELS, labels.mean(0), strict=True)},
        "no_metadata_row": sum(metadata_row(j) is None for j in jobs),
        "strength": strength,
        "bytes": int(sum(sizes)),
        "seconds": round(time.perf_counter() - start, 2),
    }
