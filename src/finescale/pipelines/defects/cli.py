"""``finescale defects train|eval|predict|anchors|score|group``: the shared verbs plus the seed's anchor coverage
analysis (``anchors``), COCO scoring of any results file (``score``) and filling the view-group fields of a COCO file
from its file names (``group``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from finescale.cli_pipeline import echo_json, pipeline_app
from finescale.pipelines.defects.config import DefectsConfig

SUMMARY = "Defect boxes on the 8 views of a cutting tool: multi-view Faster R-CNN + FPN, Soft Teacher semi-supervised."

PREDICT_WITH = {
    "predict_with": Annotated[
        str | None,
        typer.Option("--predict-with", help="teacher (EMA weights) or student; default: the run's semi.predict_with"),
    ]
}

app = pipeline_app(
    "defects",
    DefectsConfig,
    SUMMARY,
    inputs_help="the views of a tool: a folder per tool, or image files (every --views consecutive files one tool)",
    eval_options=PREDICT_WITH,
    predictor_options={
        **PREDICT_WITH,
        "score_threshold": Annotated[
            float | None, typer.Option("--score-threshold", min=0, max=1, help="lowest score reported [the run's]")
        ],
    },
    predict_options={
        "overlays": Annotated[
            Path | None, typer.Option("--overlays", help="also draw each view's boxes into PNGs in this folder")
        ],
    },
)


def _ratios(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter("give comma-separated numbers such as 0.2,0.35,0.5,1,2") from None
    if not values or any(v <= 0 for v in values):
        raise typer.BadParameter("give positive height/width ratios such as 0.2,0.35,0.5,1,2")
    return values


@app.command("anchors")
def anchors(
    json_path: Annotated[Path, typer.Option("--json", help="COCO file whose boxes are analysed")],
    anchor_ratios: Annotated[
        str | None, typer.Option("--anchor-ratios", help="targeted ratios, height/width [the seed's 7]")
    ] = None,
    default_ratios: Annotated[
        str | None, typer.Option("--default-ratios", help="ratios compared against [the seed's previous 5]")
    ] = None,
    preset: Annotated[str, typer.Option("--preset", help="image size and anchor sizes of this preset")] = "quick",
) -> None:
    """Per class: box aspect ratio (median, P25-P75) and the share of boxes an anchor reaches at IoU 0.5 / 0.7,
    default vs targeted ratios. JSON on stdout, the table on stderr."""
    from finescale.config import build_config
    from finescale.data.manifest import check_manifest_file

    check_manifest_file(json_path)
    targeted, default = _ratios(anchor_ratios), _ratios(default_ratios)
    from finescale.pipelines.defects.anchors import anchor_report, report_markdown

    cfg = build_config(DefectsConfig, preset=preset)
    options = {"default": default} if default else {}
    report = anchor_report(
        json_path,
        targeted=targeted or cfg.model.anchor_ratios,
        sizes=tuple(cfg.model.anchor_sizes),
        image_size=(cfg.data.image_height, cfg.data.image_width),
        **options,
    )
    print(report_markdown(report), file=sys.stderr)
    echo_json(report)


@app.command("score")
def score(
    gt: Annotated[Path, typer.Option("--gt", help="COCO ground-truth file")],
    dets: Annotated[Path, typer.Option("--dets", help="COCO results file (a list of image_id/category_id/bbox/score)")],
) -> None:
    """COCO metrics (mAP@[.5:.95], AP50, AP75, per class, small/medium/large) of any results file."""
    from finescale.data.manifest import check_manifest_file

    check_manifest_file(gt)
    from finescale.eval.coco_eval import score_files

    echo_json(score_files(gt, dets))


@app.command("group")
def group(
    json_path: Annotated[Path, typer.Option("--json", help="COCO file to complete")],
    pattern: Annotated[
        str,
        typer.Option(
            "--pattern",
            help=r"regex on file_name with named groups 'group' and 'view', e.g. (?P<group>\w+)_v(?P<view>\d)",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="COCO file written with group_id and view filled")],
) -> None:
    """Fill each image's group_id and view (the tool it shows and from which side) from its file name."""
    from finescale.data.coco import assign_groups

    try:
        coco = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise typer.BadParameter(f"cannot read {json_path}: {err}") from None
    completed, counts = assign_groups(coco, pattern)
    from finescale.serialize import write_json

    write_json(out, completed)
    echo_json(counts)
