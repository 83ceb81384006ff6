"""What a pre-training run learned, in a table a person can read: this run vs the encoder it started from.

    evaluate_start          the encoder the run started from (the same model built again with the same seed: random
                            init for a backbone preset), evaluated with the same protocol as the run
    comparison_markdown     a small aligned markdown table: this run / start / difference (kNN, linear, mAP)
    compare_with_start      both of the above after a run; writes random_init/eval_results.{json,md} and
                            comparison.md into the output folder
    add_to_card             the same table as a section of the model card (README.md), idempotent
    print_comparison        the table and where the pictures are, for the end of `fgssl-pretrain`

Without the second row a number like "kNN 40 %" says little: a random encoder already separates classes that
differ in colour, and chance depends on the number of classes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

#: (metric key of eval_results.json, column title), in table order.
REPORT_METRICS = (("knn_top1", "kNN top-1"), ("linear_top1", "linear top-1"), ("retrieval_map", "retrieval mAP"))
#: Where the starting encoder's results go, relative to the run's output folder.
START_DIR = "random_init"
COMPARISON_MD = "comparison.md"
CARD_BEGIN = "<!-- fgssl-report: begin -->"
CARD_END = "<!-- fgssl-report: end -->"


def start_label(model_args) -> str:
    """How the starting encoder is named: "random init" for a backbone preset, else where its weights came from."""
    from .backbones import backbone_presets

    if getattr(model_args, "model_name_or_path", None):
        return f"start ({model_args.model_name_or_path})"
    if model_args.backbone in backbone_presets():
        return "random init"
    return f"start ({model_args.backbone})"


def starting_model(model_args, method: str, seed: int):
    """The model `run_pretraining` starts from: `build_model` after `set_seed(seed)`, as the run does."""
    from transformers import set_seed

    from .backbones import build_model

    set_seed(seed)
    return build_model(model_args, method)


def evaluate_start(model_args, method: str, seed: int, data, **eval_kwargs) -> dict:
    """The starting encoder (same backbone, same seed) through `evaluate_encoder`: the run's reference point."""
    from .evaluation import evaluate_encoder

    encoder = starting_model(model_args, method, seed).fgssl
    return evaluate_encoder(encoder, data, image_size=model_args.image_size, **eval_kwargs)


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{100 * value:.1f} %"


def _points(run, start) -> str:
    if any(v is None or (isinstance(v, float) and not math.isfinite(v)) for v in (run, start)):
        return "n/a"
    return f"{100 * (run - start):+.1f}"


def comparison_rows(run: dict, start: dict, run_label: str = "this run", start_label_: str = "random init"):
    """[(row title, cell per metric)]: the run, the starting encoder, their difference in percentage points."""
    return [
        (run_label, [_pct(run.get(key)) for key, _ in REPORT_METRICS]),
        (start_label_, [_pct(start.get(key)) for key, _ in REPORT_METRICS]),
        ("difference (points)", [_points(run.get(key), start.get(key)) for key, _ in REPORT_METRICS]),
    ]


def comparison_markdown(run: dict, start: dict, run_label: str = "this run", start_label_: str = "random init",
                        num_classes: int | None = None) -> str:
    """A markdown table (columns padded, so it reads as well in a terminal) of the run vs its starting encoder.

    run, start: eval_results dicts (metric values in [0, 1]). Returns the table and a line on chance level.
    """
    header = ["encoder", *(title for _, title in REPORT_METRICS)]
    rows = [[title, *cells] for title, cells in comparison_rows(run, start, run_label, start_label_)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    table = [line(header), "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in
                                         enumerate(widths)) + "|"]
    table += [line(r) for r in rows]
    if num_classes:
        table += ["", f"Test split, frozen features; chance is {100 / num_classes:.1f} % top-1 ({num_classes} classes)."]
    return "\n".join(table) + "\n"


def compare_with_start(run_results: dict, model_args, method: str, seed: int, data, output_dir,
                       steps: int | None = None, **eval_kwargs) -> dict:
    """Evaluate the starting encoder, write its results and the comparison table; return their paths.

    Writes output_dir/random_init/eval_results.{json,md} and output_dir/comparison.md. Returns {"comparison":
    path of comparison.md, "start_results": path of the starting encoder's eval_results.json}.
    """
    from .evaluation import write_results

    output_dir = Path(output_dir)
    start = evaluate_start(model_args, method, seed, data, **eval_kwargs)
    label = start_label(model_args)
    start["settings"]["encoder"] = f"{label} ({model_args.backbone}, seed {seed})"
    json_path, _ = write_results(start, output_dir / START_DIR)
    run_label = f"this run ({method}{f', {steps} steps' if steps else ''})"
    num_classes = len(data.label_names) if getattr(data, "label_names", None) else None
    table = comparison_markdown(run_results, start, run_label, f"{label} (same backbone, seed {seed})", num_classes)
    path = output_dir / COMPARISON_MD
    path.write_text(table)
    return {"comparison": str(path), "start_results": str(json_path)}


def card_section(table: str) -> str:
    return (f"{CARD_BEGIN}\n## What pre-training changed\n\nThe frozen encoder of this run against the encoder it "
            f"started from, same protocol (see Evaluation below):\n\n{table.rstrip()}\n{CARD_END}\n")


def add_to_card(card_path, table: str) -> Path:
    """Put the comparison table into the model card: before "## Evaluation" when there is one, else at the end;
    a section added before is replaced."""
    card_path = Path(card_path)
    text = card_path.read_text()
    text = re.sub(re.escape(CARD_BEGIN) + r".*?" + re.escape(CARD_END) + r"\n?", "", text, flags=re.S)
    section = card_section(table)
    anchor = text.find("\n## Evaluation")
    text = text[: anchor + 1] + section + "\n" + text[anchor + 1 :] if anchor >= 0 else text.rstrip() + "\n\n" + section
    card_path.write_text(text)
    return card_path


def print_comparison(results: dict) -> None:
    """Print the comparison table of a finished run and where its pictures are (nothing without a table)."""
    path = results.get("comparison")
    if not path or not Path(path).is_file():
        return
    print("\nWhat pre-training changed (frozen encoder, test split):\n")
    print(Path(path).read_text().rstrip())
    pictures = [p for p in (results.get("pictures"), results.get("curves")) if p]
    if pictures:
        print("\nPictures: " + ", ".join(str(p) for p in pictures))


def read_comparison(output_dir) -> dict:
    """{"run": eval_results, "start": the starting encoder's} of a finished run folder ({} where missing)."""
    output_dir = Path(output_dir)
    found = {}
    for name, path in (("run", output_dir / "eval_results.json"), ("start", output_dir / START_DIR / "eval_results.json")):
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found
