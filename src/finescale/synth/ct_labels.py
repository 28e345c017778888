"""Which abnormalities a synthetic patient has, scan by scan, and what the report classifier says about them.

Findings come from a Gaussian copula: five patient-level factors (age, smoking, heart failure, infection, airway
disease) load on each label's latent score, which crosses a threshold set by CT-RATE's approximate prevalence. Shared
factors give the co-occurrences radiologists expect (arterial with coronary calcification, effusion with
atelectasis, consolidation with opacity); two rules add the direct ones. A patient's second scan keeps the chronic
findings and redraws part of the acute ones. Reported labels then pass through a noisy report classifier.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from finescale.data.ct_io import LABELS

FACTORS = ("age", "smoking", "cardiac", "infection", "airway")

# label: CT-RATE's approximate share of positive volumes, then the loadings on FACTORS (row norm < 1).
_TABLE = {
    "Medical material": (0.10, (0.30, 0.00, 0.40, 0.00, 0.00)),
    "Arterial wall calcification": (0.28, (0.80, 0.20, 0.10, 0.00, 0.00)),
    "Cardiomegaly": (0.10, (0.20, 0.00, 0.70, 0.00, 0.00)),
    "Pericardial effusion": (0.07, (0.00, 0.00, 0.55, 0.25, 0.00)),
    "Coronary artery wall calcification": (0.25, (0.75, 0.20, 0.20, 0.00, 0.00)),
    "Hiatal hernia": (0.14, (0.45, 0.00, 0.00, 0.00, 0.00)),
    "Lymphadenopathy": (0.25, (0.10, 0.20, 0.20, 0.45, 0.00)),
    "Emphysema": (0.20, (0.20, 0.75, 0.00, 0.00, 0.10)),
    "Atelectasis": (0.25, (0.20, 0.00, 0.30, 0.50, 0.00)),
    "Lung nodule": (0.45, (0.25, 0.35, 0.00, 0.00, 0.00)),
    "Lung opacity": (0.40, (0.00, 0.00, 0.30, 0.70, 0.00)),
    "Pulmonary fibrotic sequela": (0.27, (0.35, 0.30, 0.00, 0.25, 0.00)),
    "Pleural effusion": (0.12, (0.00, 0.00, 0.60, 0.35, 0.00)),
    "Mosaic attenuation pattern": (0.08, (0.00, 0.10, 0.00, 0.00, 0.60)),
    "Peribronchial thickening": (0.11, (0.00, 0.20, 0.00, 0.40, 0.50)),
    "Consolidation": (0.17, (0.00, 0.00, 0.00, 0.75, 0.00)),
    "Bronchiectasis": (0.10, (0.20, 0.00, 0.00, 0.10, 0.65)),
    "Interlobular septal thickening": (0.08, (0.00, 0.20, 0.55, 0.00, 0.00)),
}
PREVALENCE = np.array([_TABLE[name][0] for name in LABELS])
LOADINGS = np.array([_TABLE[name][1] for name in LABELS])
# Direct rules (cause, effect, probability): compressive atelectasis under an effusion; opacity with consolidation.
RULES = (("Pleural effusion", "Atelectasis", 0.35), ("Consolidation", "Lung opacity", 0.6))
# The latent thresholds use these shares so that, after the rules, the marginals match PREVALENCE.
_BEFORE_RULES = PREVALENCE.copy()
_BEFORE_RULES[LABELS.index("Atelectasis")] -= 0.025
_BEFORE_RULES[LABELS.index("Lung opacity")] -= 0.03
THRESHOLDS = norm.ppf(1 - _BEFORE_RULES)
ACUTE = frozenset(
    {"Lung opacity", "Consolidation", "Atelectasis", "Pleural effusion", "Pericardial effusion", "Lymphadenopathy",
     "Peribronchial thickening"}
)  # fmt: skip
_ACUTE_MASK = np.array([name in ACUTE for name in LABELS])
_ACUTE_FACTORS = np.array([f in ("cardiac", "infection") for f in FACTORS])
SCAN_PERSISTENCE = 0.5  # correlation of an acute finding's latent score between a patient's two scans
# Report classifier errors: a true finding is missed with this probability, and false positives are added at the
# rate that keeps each label's prevalence unchanged (so about this share of reported positives is spurious too).
LABEL_NOISE = 0.05


def _apply_rules(found: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    found = found.copy()
    for cause, effect, p in RULES:
        if found[LABELS.index(cause)] and rng.random() < p:
            found[LABELS.index(effect)] = True
    return found


def sample_findings(rng: np.random.Generator, n_scans: int) -> list[np.ndarray]:
    """True findings of one patient's ``n_scans`` scans: (18,) bool each, in :data:`LABELS` order."""
    factors = rng.standard_normal(len(FACTORS))
    unique = rng.standard_normal(len(LABELS))
    spread = np.sqrt(1 - (LOADINGS**2).sum(1))
    scans = []
    for k in range(n_scans):
        if k:  # later scan: acute factors and acute labels' own parts drift; chronic ones stay
            keep, fresh = SCAN_PERSISTENCE, np.sqrt(1 - SCAN_PERSISTENCE**2)
            factors = np.where(_ACUTE_FACTORS, keep * factors + fresh * rng.standard_normal(len(FACTORS)), factors)
            unique = np.where(_ACUTE_MASK, keep * unique + fresh * rng.standard_normal(len(LABELS)), unique)
        latent = LOADINGS @ factors + spread * unique
        scans.append(_apply_rules(latent > THRESHOLDS, rng))
    return scans


def report_labels(found: np.ndarray, rng: np.random.Generator, noise: float = LABEL_NOISE) -> np.ndarray:
    """Labels as a report classifier gives them: (18,) int8 from true findings (18,) bool."""
    false_positive = noise * PREVALENCE / (1 - PREVALENCE)
    flip = rng.random(len(LABELS)) < np.where(found, noise, false_positive)
    return (found ^ flip).astype(np.int8)
