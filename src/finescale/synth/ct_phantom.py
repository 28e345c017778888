"""One synthetic chest CT volume: patient anatomy, the scan's findings, then the scanner's image of it.

Randomness is split into streams so that each level can be held fixed while another changes:
``patient_seed`` draws the anatomy and its vessel tree, ``scan_seed`` the position, breathing and each finding's own
geometry (one stream per label), ``volume_seed`` the reconstruction noise. Two reconstructions of one scan share the
object and differ in kernel, slice thickness and noise; toggling one finding leaves the other findings in place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from finescale.data.ct_io import LABELS
from finescale.synth import ct_findings as fnd
from finescale.synth import ct_parenchyma as par
from finescale.synth.ct_anatomy import Phantom, sample_anatomy, superellipse
from finescale.synth.ct_geometry import Grid
from finescale.synth.ct_scanner import SCANNERS, simulate
from finescale.synth.ct_thorax import render_anatomy

DEFAULT_SHAPE = (64, 128, 128)
SIGNATURE_STRENGTH = fnd.SIGNATURE_STRENGTH

# Painting order: parenchymal texture first, then what replaces lung (fluid, collapse), then dense and metal last
# (metal streaks cross everything). The anatomy-level findings act in ct_findings.modify_anatomy instead.
PAINTERS: tuple[tuple[str, Callable[[Phantom, np.random.Generator, float], None]], ...] = (
    ("Mosaic attenuation pattern", par.mosaic_attenuation),
    ("Emphysema", par.emphysema),
    ("Interlobular septal thickening", par.septal_thickening),
    ("Pulmonary fibrotic sequela", par.fibrotic_sequela),
    ("Lung opacity", par.lung_opacity),
    ("Lung nodule", fnd.nodule),
    ("Consolidation", par.consolidation),
    ("Atelectasis", par.atelectasis),
    ("Pleural effusion", par.pleural_effusion),
    ("Lymphadenopathy", fnd.lymphadenopathy),
    ("Arterial wall calcification", fnd.arterial_calcification),
    ("Coronary artery wall calcification", fnd.coronary_calcification),
    ("Medical material", fnd.medical_material),
)


def as_present(findings: Sequence[bool] | Sequence[int] | Mapping[str, bool]) -> tuple[bool, ...]:
    """(18,) flags in :data:`LABELS` order from a sequence or a ``{label: bool}`` mapping (missing labels: absent)."""
    if isinstance(findings, Mapping):
        unknown = set(findings) - set(LABELS)
        if unknown:
            raise ValueError(f"unknown findings: {sorted(unknown)}")
        return tuple(bool(findings.get(name, False)) for name in LABELS)
    if len(findings) != len(LABELS):
        raise ValueError(f"findings must have {len(LABELS)} entries, got {len(findings)}")
    return tuple(bool(f) for f in findings)


def default_spacing(scanner: str, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> tuple[float, float, float]:
    """The scanner's nominal spacing (z, y, x) mm, scaled so that any ``shape`` covers the same field of view."""
    nominal = SCANNERS[scanner].spacing
    return tuple(float(s * d / n) for s, d, n in zip(nominal, DEFAULT_SHAPE, shape, strict=True))


def build_object(
    findings: Sequence[bool] | Mapping[str, bool],
    *,
    patient_seed: Sequence[int],
    scan_seed: Sequence[int],
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] | None = None,
    strength: float = SIGNATURE_STRENGTH,
) -> Phantom:
    """The noise-free object: anatomy plus findings, in HU on a (Z, Y, X) grid of ``spacing`` (z, y, x) mm."""
    present = as_present(findings)
    patient_seed, scan_seed = tuple(patient_seed), tuple(scan_seed)
    anatomy = sample_anatomy(np.random.default_rng(list(patient_seed)), tree_seed=(*patient_seed, 7))
    scan = np.random.default_rng([*scan_seed, 0])
    anatomy = replace(  # this scan's breathing level
        anatomy,
        parenchyma_hu=anatomy.parenchyma_hu + scan.normal(0, 10),
        lung_width=anatomy.lung_width * scan.uniform(0.97, 1.03),
    )
    shift = (scan.normal(0, 8), scan.normal(0, 3), scan.normal(0, 4))  # where the patient lies in the field of view
    rngs = [np.random.default_rng([*scan_seed, 100 + i]) for i in range(len(LABELS))]
    anatomy = fnd.modify_anatomy(anatomy, present, rngs, strength)
    grid = Grid(tuple(shape), spacing or default_spacing("A", shape), shift)
    phantom = render_anatomy(grid, anatomy, np.random.default_rng([*scan_seed, 1]))
    for name, paint in PAINTERS:
        i = LABELS.index(name)
        if present[i]:
            paint(phantom, rngs[i], strength)
    return phantom


def body_radius(phantom: Phantom) -> np.ndarray:
    """(Z, Y, X)-broadcastable normalised radius of the body outline: 0 at its centre, 1 at the skin."""
    a, g = phantom.anatomy, phantom.grid
    return superellipse(g.x / a.body_ax, (g.y - a.body_cy) / a.body_ay, 2.2)


def render_volume(
    findings: Sequence[bool] | Mapping[str, bool],
    *,
    patient_seed: Sequence[int],
    scan_seed: Sequence[int],
    volume_seed: Sequence[int],
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] | None = None,
    scanner: str = "A",
    kernel: int = 0,
    thickness_mm: float | None = None,
    strength: float = SIGNATURE_STRENGTH,
) -> np.ndarray:
    """One reconstructed volume: (Z, Y, X) float32 HU in [-1024, 3071].

    ``findings``: 18 flags (or ``{label: bool}``) of what the scan really shows; ``kernel`` indexes the scanner's
    kernels (0 soft, 1 sharp); ``thickness_mm`` defaults to the z spacing."""
    spacing = spacing or default_spacing(scanner, shape)
    phantom = build_object(
        findings, patient_seed=patient_seed, scan_seed=scan_seed, shape=shape, spacing=spacing, strength=strength
    )
    model = SCANNERS[scanner]
    return simulate(
        phantom.hu, spacing, model, model.kernels[kernel], np.random.default_rng(list(volume_seed)),
        thickness_mm=thickness_mm or spacing[0], body_radius=body_radius(phantom),
    )  # fmt: skip
