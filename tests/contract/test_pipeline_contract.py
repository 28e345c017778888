"""The pipeline contract (``finescale/pipelines/__init__.py``), checked the same way for every name in
``PIPELINE_NAMES``: a new pipeline gets these checks by adding its name there.

Per pipeline, through the real console entry point as a user runs it: both presets resolve (the ``full`` one to what
the README documents), ``synth``, ``train`` with a ``--weights`` file that is then deleted (a checkpoint must predict
without it), ``--resume``, ``eval`` (every metric key carries the pipeline's name), ``predict`` (one JSON line per
input, an unreadable input reported without stopping the others), and ``finescale.load(run).predict`` giving the
same answers in Python. The ``gpu`` variant runs the same on CUDA when one is present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tests.conftest import finescale as run_cli

import finescale
from finescale.config import build_config
from finescale.pipelines import PIPELINE_NAMES, get_pipeline, is_run_key

# What the README promises of each `full` preset (the seed's scale): a preset that silently fell back to the quick
# model would fail here.
FULL_PRESETS: dict[str, dict[str, Any]] = {
    "length": {"backbone": "vit_base_patch16_224", "scales": [224, 384], "share_backbone": False},
    "dims": {"backbone": "vit_base_patch16_224", "image_size": 224, "embedding_dim": 256},
    "puzzle": {"backbone": "resnet18", "fpn_channels": 256},
    "ct": {"backbone": "resnet50", "shape": [240, 480, 480], "spacing": [1.5, 0.75, 0.75], "image_size": 288},
    "defects": {
        "backbone": "resnet50",
        "fpn_channels": 256,
        "image_height": 720,
        "image_width": 256,
        "pool_tokens": 2048,
    },
}
ACCELERATORS = [
    "cpu",
    pytest.param(
        "gpu",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
        ],
    ),
]


def flags(overrides: dict[str, Any]) -> list[str]:
    """Config overrides as the CLI flags a user would type."""
    out = []
    for name, value in overrides.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{flag[2:]}")
        else:
            out += [flag, ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)]
    return out


def leaf_values(cfg: Any) -> dict[str, Any]:
    from finescale.config import leaf_fields

    values = {}
    for path, _, _ in leaf_fields(type(cfg)):
        node = cfg
        for part in path:
            node = getattr(node, part)
        values[path[-1]] = node
    return values


@pytest.mark.parametrize("name", PIPELINE_NAMES)
def test_presets_exist_and_full_is_the_documented_model(name: str):
    pipeline = get_pipeline(name)
    quick = build_config(pipeline.config_class, preset="quick")
    full = build_config(pipeline.config_class, preset="full")
    assert quick.preset == "quick" and full.preset == "full"
    values = leaf_values(full)
    for key, expected in FULL_PRESETS[name].items():
        assert values[key] == expected, f"{name} full preset: {key} = {values[key]!r}, documented {expected!r}"
    assert leaf_values(quick)["backbone"] != values["backbone"]  # quick is the CPU model, not the seed's
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    assert FULL_PRESETS[name]["backbone"] in readme
    # the smoke overrides are valid config fields of this pipeline
    build_config(pipeline.config_class, preset="quick", overrides=dict(pipeline.smoke))


@pytest.fixture(scope="module", params=PIPELINE_NAMES)
def synthetic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    name = request.param
    out = tmp_path_factory.mktemp(f"{name}_data")
    summary = json.loads(run_cli("synth", name, "--out", out, "--n", get_pipeline(name).smoke_n).stdout)
    assert summary and all((out / f"{split}.json").exists() for split in ("train", "val", "test"))
    return name, out


def backbone_weights(name: str, folder: Path) -> Path:
    """A state dict of the smoke run's backbone, as a user's --weights file would hold."""
    import timm

    pipeline = get_pipeline(name)
    backbone = build_config(pipeline.config_class, overrides=dict(pipeline.smoke)).model.backbone
    path = folder / "backbone.pt"
    torch.save(timm.create_model(backbone, pretrained=False).state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_train_resume_eval_predict_load(synthetic: tuple[str, Path], accelerator: str, tmp_path: Path):
    name, data = synthetic
    pipeline = get_pipeline(name)
    device = "cuda" if accelerator == "gpu" else "cpu"
    run = tmp_path / "run"
    weights = backbone_weights(name, tmp_path)
    common = [*flags(dict(pipeline.smoke)), "--accelerator", accelerator, "--no-progress"]
    common += ["--checkpoint-every-n-steps", "1", "--train-json", data / "train.json", "--val-json", data / "val.json"]
    common += flags(pipeline.data_overrides(data)) if pipeline.data_overrides else []  # defects' unlabeled images

    # train with a --weights file, then delete it: nothing after training may need it again
    summary = json.loads(run_cli(name, "train", "--out", run, *common, "--weights", weights).stdout)
    weights.unlink()
    assert summary["epochs_trained"] == 1 and summary["global_step"] > 0
    assert all(is_run_key(k) for k in summary), summary

    # --resume continues the same run for one more epoch
    resumed = json.loads(run_cli(name, "train", "--out", run, *common, "--epochs", "2", "--resume").stdout)
    assert resumed["epochs_trained"] == 2 and resumed["global_step"] > summary["global_step"]

    # eval: every metric the pipeline writes carries its name
    result = run_cli(name, "eval", "--checkpoint", run, "--json", data / "test.json", "--device", device)
    metrics = json.loads(result.stdout)
    assert metrics[pipeline.bench_metrics[0]] is not None
    stored = json.loads((run / "metrics.json").read_text())
    assert all(is_run_key(k) for k in stored if k != "eval"), stored  # the training summary, then the evaluations
    assert stored["eval"][(data / "test.json").as_posix()] == metrics  # that evaluation alone, under its manifest
    foreign = [k for k in metrics if not k.startswith(f"{name}_")]
    assert not foreign, f"metrics.json keys without the {name}_ prefix: {foreign}"
    assert (run / "report.html").exists()

    # predict: one JSON line per input; an unreadable input is reported and the others still answered
    inputs, options = pipeline.example_inputs(data / "test.json", 3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    option_flags = flags({k: str(v) for k, v in options.items()})
    cli = run_cli(name, "predict", "--checkpoint", run, "--device", device, *option_flags, *inputs, broken, check=False)
    assert cli.returncode == 1, cli.stderr
    lines = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(lines) == len(inputs) and not any("error" in line for line in lines)
    assert "broken.png" in cli.stderr and "1 of 4 inputs" in cli.stderr
    assert f"loading {run / 'best.ckpt'} ({name})..." in cli.stderr  # said before the slow part

    # finescale.load gives the same answers in Python, as a list of plain dicts
    answers = finescale.load(run, device=device).predict([str(p) for p in inputs], **options)
    assert isinstance(answers, list) and len(answers) == len(inputs)
    json.dumps(answers)  # plain JSON
    for mine, theirs in zip(answers, lines, strict=True):
        assert_close(mine, theirs)


def assert_close(a: Any, b: Any, tol: float = 2e-3) -> None:
    """Equal plain-JSON values, numbers within ``tol`` (the CLI and Python paths may differ in the last digit)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_close(a[key], b[key], tol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_close(x, y, tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=tol)
    else:
        assert a == b


@pytest.mark.slow
def test_a_checkpoint_of_another_pipeline_is_refused_in_one_line(length_run: Path, implants: Path, tmp_path: Path):
    image = implants / json.loads((implants / "test.json").read_text())[0]["image"]
    manifest = implants / "test.json"

    def refused(result: Any, found: str, expected: str, *, lines: int = 1) -> None:
        assert result.returncode == 2, result.stderr
        errors = result.stderr.strip().splitlines()
        assert len(errors) == lines and f"is a {found} checkpoint, not a {expected} one" in errors[-1], errors

    for other in [n for n in PIPELINE_NAMES if n != "length"]:
        extra = ["--puzzle", image] if other == "puzzle" else []
        refused(run_cli(other, "predict", "--checkpoint", length_run, *extra, image, check=False), "length", other)
        refused(run_cli(other, "eval", "--checkpoint", length_run, "--json", manifest, check=False), "length", other)

    # a dims run given to length: refused from its config.yaml; a bare checkpoint file (no config.yaml beside it)
    # from the config inside, after the line saying it is being loaded
    dims_run = tmp_path / "dims_run"
    config = build_config(get_pipeline("dims").config_class).model_dump(mode="json")
    torch.save({"hyper_parameters": {"config": config}, "state_dict": {}}, tmp_path / "dims.ckpt")
    dims_run.mkdir()
    (dims_run / "config.yaml").write_text(yaml.safe_dump(config))
    (dims_run / "best.ckpt").write_bytes((tmp_path / "dims.ckpt").read_bytes())
    refused(run_cli("length", "predict", "--checkpoint", dims_run, image, check=False), "dims", "length")
    refused(run_cli("length", "eval", "--checkpoint", dims_run, "--json", manifest, check=False), "dims", "length")
    bare = run_cli("length", "predict", "--checkpoint", tmp_path / "dims.ckpt", image, check=False)
    refused(bare, "dims", "length", lines=2)

    # dims' classifier checkpoints: a length run is no company classifier, with or without its config.yaml
    shutil.copy(length_run / "best.ckpt", tmp_path / "length.ckpt")
    for company, lines in ((length_run, 1), (tmp_path / "length.ckpt", 1)):
        train = ["--train-json", manifest, "--val-json", manifest, "--out", tmp_path / "dims_out"]
        result = run_cli("dims", "train", *train, "--company-checkpoint", company, check=False)
        refused(result, "length", "dims", lines=lines)
        assert "--company-checkpoint" in result.stderr
