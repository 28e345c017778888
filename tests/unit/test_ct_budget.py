"""The ``ct`` data-budget pair: which training volumes fit in a share of the training manifest's source-file bytes,
counted as source files or as stored files; the pure selection on hand-made sizes, then on real NIfTI files packed
into the project's store and read through the data module, and the two bench variants."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydantic import ValidationError

from finescale.config import build_config
from finescale.data.ct_io import LABELS
from finescale.engine.run import manifest_metrics
from finescale.errors import FinescaleError
from finescale.pipelines.ct.bench import BUDGET_SHARE, bench_variants
from finescale.pipelines.ct.config import CTConfig, CTDataConfig
from finescale.pipelines.ct.data import CTDataModule, ensure_store, storage_budget, volumes_within_budget

NAMES = ["a", "b", "c", "d", "e"]
RECORDS = [{"name": n} for n in NAMES]
SOURCE = dict(zip(NAMES, [100, 200, 300, 150, 250], strict=True))  # 1000 bytes in all
PACKED = dict(zip(NAMES, [40, 80, 120, 60, 100], strict=True))  # the store 2.5x smaller


def kept_names(share: float, fmt: str, records=RECORDS, source=SOURCE, stored=PACKED) -> list[str]:
    return [r["name"] for r in volumes_within_budget(records, source, stored, share, fmt)]


# ------------------------------------------------------------------------------------------------ pure selection


def test_source_and_packed_counts_keep_the_leading_volumes_that_fit():
    assert storage_budget(RECORDS, SOURCE, 0.35) == 350
    assert kept_names(0.35, "source") == ["a", "b"]  # 100 + 200; + 300 is over 350
    assert kept_names(0.35, "packed") == ["a", "b", "c", "d"]  # 40 + 80 + 120 + 60 = 300; + 100 is over 350


def test_a_volume_that_fills_the_budget_exactly_is_kept():
    assert kept_names(0.3, "packed") == ["a", "b", "c", "d"]  # 300 packed bytes = the budget
    assert kept_names(0.3, "source") == ["a", "b"]  # 300 source bytes = the budget


def test_a_later_smaller_volume_is_not_picked_past_one_that_does_not_fit():
    source = {"a": 100, "b": 400, "c": 50}
    records = [{"name": n} for n in source]
    assert kept_names(0.5, "source", records, source, source) == ["a"]  # budget 275: b ends it, c is not taken


def test_share_one_keeps_every_volume():
    assert kept_names(1.0, "source") == NAMES
    assert kept_names(1.0, "packed") == NAMES


def test_a_first_volume_over_the_budget_is_a_one_line_error():
    with pytest.raises(FinescaleError, match=r"budget of 0\.000 MB .*holds no training volume.*first, a") as info:
        kept_names(0.05, "source")  # 50 bytes; a takes 100
    assert "\n" not in str(info.value)
    assert kept_names(0.05, "packed") == ["a"]  # 40 packed bytes fit


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="fmt"):
        kept_names(0.5, "raw")


# --------------------------------------------------------------------------------------------- config and bench


def test_the_share_is_a_fraction_of_at_most_one_and_off_by_default():
    assert CTDataConfig().train_storage_share is None and CTDataConfig().train_storage_format == "packed"
    for bad in (0, -0.1, 1.5):
        with pytest.raises(ValidationError):
            CTDataConfig(train_storage_share=bad)
    with pytest.raises(FinescaleError, match="train-storage-share|train_storage_share"):
        build_config(CTConfig, overrides={"train_storage_share": 2})


def test_the_bench_pair_is_the_baseline_with_the_budget_counted_two_ways():
    variants = bench_variants(build_config(CTConfig))
    source, packed = variants["budget-source"], variants["budget-packed"]
    baseline = variants["baseline"]
    budget = {"train_storage_share": BUDGET_SHARE}
    assert source == {**baseline, **budget, "train_storage_format": "source"}
    assert packed == {**baseline, **budget, "train_storage_format": "packed"}
    assert "train_storage_share" not in baseline  # the other rows train on the whole manifest


# -------------------------------------------------------------------------------------- real files, the module

SHAPE = (16, 48, 48)  # the grid is the source's own shape and spacing: no resampling, the codec alone differs
SPACING = (4.0, 2.0, 2.0)


def noisy_phantom(seed: int) -> np.ndarray:
    """(Z, Y, X) int16 HU: a body ellipse with two lungs under scanner-like noise (where the store's codec beats
    gzip; on noise-free phantoms .nii.gz is smaller)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in SHAPE), indexing="ij")
    hu = np.full(SHAPE, -1000.0)
    hu[(y / 0.7) ** 2 + (x / 0.9) ** 2 < 1] = 40
    hu[((y / 0.5) ** 2 + ((np.abs(x) - 0.4) / 0.3) ** 2) < 1] = -850
    hu += rng.normal(0, rng.uniform(12, 24), SHAPE)
    return np.rint(hu).astype(np.int16)


def write_manifest(path: Path, names: list[str], seed: int) -> Path:
    """NIfTI volumes (nibabel's (X, Y, Z) order, gzip as downloaded) and a JSON manifest of them."""
    records = []
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    for i, name in enumerate(names):
        volume = path.parent / "volumes" / name
        volume.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.transpose(noisy_phantom(seed + i), (2, 1, 0)), affine), str(volume))
        records.append({"volume": str(volume), "name": name, "labels": [i % 2] * len(LABELS)})
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[dict, object]:
    root = tmp_path_factory.mktemp("ct_budget")
    train = write_manifest(root / "train.json", [f"train_{i}_a_1.nii.gz" for i in range(10)], seed=0)
    val = write_manifest(root / "val.json", [f"valid_{i}_a_1.nii.gz" for i in range(2)], seed=100)
    overrides = {"train_json": str(train), "val_json": str(val), "spacing": list(SPACING), "shape": list(SHAPE)}
    store = ensure_store(build_config(CTConfig, overrides=overrides), [train, val], workers=1)
    return overrides, store


def leading_count(sizes: list[int], budget: int) -> int:
    return int(np.searchsorted(np.cumsum(sizes), budget, side="right"))


def test_the_module_keeps_as_many_training_volumes_as_the_byte_sums_allow(packed, caplog):
    overrides, store = packed
    records = json.loads(Path(overrides["train_json"]).read_text())
    source = [Path(r["volume"]).stat().st_size for r in records]
    stored = [store.file(r["name"]).stat().st_size for r in records]
    assert all(s < b for s, b in zip(stored, source, strict=True))  # the store compresses better here
    budget = round(0.7 * sum(source))
    counts = {}
    for fmt, sizes in (("source", source), ("packed", stored)):
        cfg = build_config(CTConfig, overrides={**overrides, "train_storage_share": 0.7, "train_storage_format": fmt})
        module = CTDataModule(cfg, store)
        with caplog.at_level(logging.INFO, logger="finescale"):
            module.setup("fit")
        counts[fmt] = len(module.train_set)
        assert counts[fmt] == leading_count(sizes, budget)
        assert [r["name"] for r in module.train_set.records] == [r["name"] for r in records[: counts[fmt]]]
        assert len(module.val_set) == 2  # validation is never cut
        metrics = manifest_metrics(module.manifests)
        assert metrics["train_n_total"] == 10 and metrics["train_n_valid"] == counts[fmt]
        assert metrics["train_skipped_over_storage_budget"] == 10 - counts[fmt] and metrics["val_n_valid"] == 2
        assert f"keeps {counts[fmt]} of 10 training volumes" in caplog.text
        assert f"storage budget {budget / 1e6:.1f} MB" in caplog.text
    assert counts["packed"] > counts["source"] >= 1


def test_without_a_share_the_module_trains_on_the_whole_manifest(packed):
    overrides, store = packed
    module = CTDataModule(build_config(CTConfig, overrides=overrides), store)
    module.setup("fit")
    assert len(module.train_set) == 10 and "train_skipped_over_storage_budget" not in manifest_metrics(module.manifests)
