"""`finescale synth ct`: CT-RATE layout, patient splits, determinism, readable HU, and the findings' signatures."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from finescale.data import ct_io
from finescale.data.ct_io import LABELS
from finescale.synth import ct_labels
from finescale.synth.ct import SPLITS, generate_ct, plan_volumes
from finescale.synth.ct_phantom import build_object, render_volume
from finescale.synth.ct_scanner import SCANNERS

SHAPE = (24, 48, 48)  # same field of view as the default 64 x 128 x 128, at coarser voxels
N = 14


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ct")
    return out, generate_ct(out, n=N, seed=3, shape=SHAPE, workers=2)


def manifests(out: Path) -> dict[str, list[dict]]:
    return {s: json.loads((out / f"{s}.json").read_text()) for s in SPLITS}


def test_layout_follows_ct_rate_names_and_nesting(synth):
    out, summary = synth
    records = [r for recs in manifests(out).values() for r in recs]
    assert len(records) == N == sum(summary["counts"].values())
    on_disk = sorted(p.relative_to(out).as_posix() for p in (out / "volumes").rglob("*") if p.is_file())
    assert on_disk == sorted(r["volume"] for r in records)
    for r in records:
        assert re.fullmatch(r"(train|valid)_\d+_[ab]_[12]\.nii\.gz", r["name"])
        assert r["volume"] == f"volumes/{ct_io.volume_relpath(r['name'])}"
        assert ct_io.patient_id(r["name"]) == r["patient"]


def test_splits_are_by_patient_and_external_is_scanner_b_only(synth):
    out, _ = synth
    patients = {s: {r["patient"] for r in recs} for s, recs in manifests(out).items()}
    assert all(patients[s] for s in SPLITS)
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not patients[a] & patients[b], (a, b)
    assert all(p.startswith("train_") for s in ("train", "val") for p in patients[s])
    assert all(p.startswith("valid_") for s in ("test", "external") for p in patients[s])
    for job in plan_volumes(N, seed=3, shape=SHAPE):
        assert (job.scanner == "B") == (job.split == "external")
    for split, records in manifests(out).items():
        makers = {r["metadata"]["Manufacturer"] for r in records if "metadata" in r}
        assert makers <= {SCANNERS["B" if split == "external" else "A"].manufacturer}


def test_patients_have_one_or_two_scans_of_one_or_two_reconstructions():
    jobs = plan_volumes(40, seed=1)
    assert len(jobs) == 40
    scans: dict[str, set[str]] = {}
    for job in jobs:
        patient, scan, recon = re.fullmatch(r"((?:train|valid)_\d+)_([ab])_([12])\.nii\.gz", job.name).groups()
        scans.setdefault(patient, set()).add(scan)
    assert max(map(len, scans.values())) <= 2
    assert {j.storage for j in jobs} == {"signed", "unsigned", "half", "header", "plain"}


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(synth, tmp_path):
    out, _ = synth
    generate_ct(tmp_path, n=N, seed=3, shape=SHAPE, workers=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel


def test_labels_and_metadata_csvs_match_the_manifests(synth):
    out, _ = synth
    labels = ct_io.read_labels_csv(out / "labels.csv")
    metadata = ct_io.read_metadata_csv(out / "metadata.csv")
    records = [r for recs in manifests(out).values() for r in recs]
    assert set(labels) == {r["name"] for r in records}
    for r in records:
        np.testing.assert_array_equal(labels[r["name"]], r["labels"])
        if "metadata" in r:
            row = {k: (v if isinstance(v, str | list) else float(v)) for k, v in r["metadata"].items()}
            assert metadata[r["name"]] == {**row, "SliceThickness": str(r["metadata"]["SliceThickness"])}
        else:
            assert r["name"] not in metadata
    assert any("metadata" not in r for r in records)  # header-scaled and plain volumes have no row


def test_every_written_volume_reads_back_in_plausible_hu(synth):
    out, _ = synth
    for r in (r for recs in manifests(out).values() for r in recs):
        volume = ct_io.read_volume(out / r["volume"], metadata=r.get("metadata"))
        hu = volume.hu
        assert hu.shape == SHAPE
        assert volume.scaling in (("csv",) if "metadata" in r else ("header", "none"))
        if "metadata" in r:
            assert volume.spacing == pytest.approx((r["metadata"]["ZSpacing"], *r["metadata"]["XYSpacing"]))
        assert np.median(hu[:, :4, :4]) < -900  # air in the corners
        assert hu.max() > 300  # bone
        soft = (hu > 0) & (hu < 100)
        assert soft.mean() > 0.05  # muscle, heart, liver
        assert -1025 <= hu.min() and hu.max() <= 3072


def test_label_sampler_meets_prevalence_and_co_occurrence():
    rng = np.random.default_rng(0)
    found = np.array([ct_labels.sample_findings(rng, 1)[0] for _ in range(6000)], dtype=float)
    np.testing.assert_allclose(found.mean(0), ct_labels.PREVALENCE, atol=0.03)
    corr = np.corrcoef(found.T)
    i = LABELS.index
    assert corr[i("Arterial wall calcification"), i("Coronary artery wall calcification")] > 0.3
    assert corr[i("Pleural effusion"), i("Atelectasis")] > 0.2
    assert corr[i("Consolidation"), i("Lung opacity")] > 0.3
    reported = np.array([ct_labels.report_labels(f.astype(bool), rng) for f in found[:3000]])
    assert 0.02 < (reported != found[:3000]).any(1).mean() < 0.4


# --------------------------------------------------------------------------------------------------- signatures

PAIR_SHAPE = (48, 96, 96)  # the default field of view at 3.3 mm voxels, 6.7 mm slices
PAIR_SEEDS = {"patient_seed": (5, 1), "scan_seed": (5, 2), "shape": PAIR_SHAPE}


@functools.cache
def lungs() -> np.ndarray:
    """The lung mask of the phantom that every pair below is rendered from."""
    return build_object({}, **PAIR_SEEDS).lung


@functools.cache
def without() -> np.ndarray:
    return render_volume({}, volume_seed=(5, 3), **PAIR_SEEDS)


def pair(label: str) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """The same scan rendered without and with one finding (same anatomy, geometry and noise), and the normalised
    (z, y, x) voxel coordinates: z grows towards the feet, y towards the back."""
    on = render_volume({label: True}, volume_seed=(5, 3), **PAIR_SEEDS)
    coords = np.meshgrid(*(np.linspace(0, 1, n) for n in PAIR_SHAPE), indexing="ij", sparse=True)
    return without(), on, tuple(coords)


def test_pleural_effusion_puts_fluid_in_the_lower_back_of_the_lungs():
    off, on, (z, y, x) = pair("Pleural effusion")
    lower_back = (z > 0.5) & (y > 0.5) & lungs()
    fluid = lambda v: ((v > -30) & (v < 60) & lower_back).sum()  # noqa: E731
    upper_front = (z < 0.5) & (y < 0.5) & lungs()
    assert fluid(on) > fluid(off) + 50
    assert np.abs(on - off)[upper_front].max() < 1  # dependent: nothing moves in the upper front


def test_emphysema_adds_low_attenuation_areas_in_the_lungs():
    off, on = pair("Emphysema")[:2]
    low = lambda v: ((v < -950) & lungs()).sum()  # noqa: E731
    assert low(on) > low(off) + 100


def test_calcifications_are_small_dense_spots():
    for label in ("Arterial wall calcification", "Coronary artery wall calcification"):
        off, on = pair(label)[:2]
        diff = on - off
        assert diff.max() > 150, label
        changed = np.abs(diff) > 50
        assert 0 < changed.sum() < 300, label  # a few spots, nothing else changed
        assert (changed & lungs()).sum() < 0.25 * changed.sum(), label  # on vessel walls, not in the lungs


def test_medical_material_is_metal():
    off, on = pair("Medical material")[:2]
    assert (off > 1200).sum() == 0 and (on > 1200).sum() > 0


def test_cardiomegaly_enlarges_the_heart():
    off, on, (z, y, x) = pair("Cardiomegaly")
    front_middle = (z > 0.4) & (z < 0.85) & (y < 0.55) & (x > 0.3) & (x < 0.8)
    heart = lambda v: ((v > 10) & (v < 80) & front_middle).sum()  # noqa: E731
    assert heart(on) > heart(off) * 1.15


def test_consolidation_and_opacity_raise_lung_attenuation():
    for label, band in (("Consolidation", (-100, 100)), ("Lung opacity", (-750, -350))):
        off, on = pair(label)[:2]
        count = lambda v, b=band: ((v > b[0]) & (v < b[1]) & lungs()).sum()  # noqa: E731
        assert count(on) > count(off) + 30, label


def test_patient_splits_are_stratified_on_the_labels():
    """Seed 0 at the bench's size: the random patient split it replaced left 5 of the 18 labels without a positive
    in the validation split; stratified, every split holds positives of every label."""
    jobs = plan_volumes(400, seed=0)
    for split in SPLITS:
        positives = np.array([j.labels for j in jobs if j.split == split]).sum(0)
        assert (positives > 0).all(), (split, dict(zip(LABELS, positives.tolist(), strict=True)))


def test_strength_scales_a_signature():
    off, on = pair("Emphysema")[:2]
    stronger = render_volume({"Emphysema": True}, volume_seed=(5, 3), **PAIR_SEEDS, strength=2.0)
    low = lambda v: ((v < -950) & lungs()).sum()  # noqa: E731
    assert low(stronger) - low(off) > 1.5 * (low(on) - low(off))


def test_synth_ct_cli_takes_strength_and_refuses_a_non_positive_one(tmp_path: Path):
    from tests.conftest import finescale_in_process

    done = finescale_in_process("synth", "ct", "--out", tmp_path / "a", "--n", 2, "--strength", 1.5, "--workers", 1)
    summary = json.loads(done.stdout)
    assert summary["strength"] == 1.5 and sum(summary["counts"].values()) == 2
    refused = finescale_in_process("synth", "ct", "--out", tmp_path / "b", "--n", 2, "--strength", 0, check=False)
    assert refused.returncode == 2 and "--strength" in refused.stderr and not (tmp_path / "b").exists()
