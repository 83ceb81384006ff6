"""training.report: the run vs the encoder it started from, printed at the end of fgssl-pretrain and in the card."""

import json
from pathlib import Path

import pytest
import torch

from fgssl.training import report
from fgssl.training.arguments import ModelArguments
from fgssl.training.backbones import build_model
from fgssl.training.pretrain import main
from fgssl.training.synthetic import make_fine_grained_dataset

RUN = {"knn_top1": 0.452, "linear_top1": 0.5, "retrieval_map": 0.301, "retrieval_rank1": 0.6}
START = {"knn_top1": 0.11, "linear_top1": 0.093, "retrieval_map": 0.12}


def _rows(table: str) -> dict[str, list[str]]:
    """{first cell: other cells} of the markdown table rows."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows[cells[0]] = cells[1:]
    return rows


def test_table_has_the_run_the_random_init_row_and_their_difference():
    table = report.comparison_markdown(RUN, START, "this run (fgssl)", "random init", num_classes=10)
    rows = _rows(table)
    assert rows["encoder"] == ["kNN top-1", "linear top-1", "retrieval mAP"]
    assert rows["this run (fgssl)"] == ["45.2 %", "50.0 %", "30.1 %"]
    assert rows["random init"] == ["11.0 %", "9.3 %", "12.0 %"]
    assert rows["difference (points)"] == ["+34.2", "+40.7", "+18.1"]
    assert "chance is 10.0 %" in table
    # Right-aligned, padded columns: every table line has the same width (readable in a terminal).
    assert len({len(line) for line in table.splitlines() if line.startswith("|")}) == 1


def test_missing_or_undefined_metrics_read_n_a():
    rows = _rows(report.comparison_markdown({"knn_top1": float("nan")}, {"knn_top1": 0.1}))
    assert rows["this run"] == ["n/a", "n/a", "n/a"]
    assert rows["random init"][0] == "10.0 %" and rows["difference (points)"][0] == "n/a"


def test_card_section_goes_before_evaluation_once(tmp_path):
    card = tmp_path / "README.md"
    card.write_text("# model\n\n## Method\n\ntext\n\n## Evaluation\n\n| metric | value |\n")
    table = report.comparison_markdown(RUN, START)
    report.add_to_card(card, table)
    report.add_to_card(card, table.replace("45.2", "46.0"))  # a rerun replaces the section
    text = card.read_text()
    assert text.count(report.CARD_BEGIN) == 1 and "46.0 %" in text and "45.2 %" not in text
    assert text.index("What pre-training changed") < text.index("## Evaluation")
    plain = tmp_path / "plain.md"
    plain.write_text("# no evaluation heading\n")
    assert "random init" in report.add_to_card(plain, table).read_text()


def test_starting_model_is_the_runs_initial_model():
    args = ModelArguments(backbone="convnext-tiny-cpu", image_size=32)
    torch.manual_seed(123)  # run_pretraining seeds with set_seed(seed) before build_model; report does the same
    from transformers import set_seed

    set_seed(5)
    initial = build_model(args, "fgssl").fgssl.state_dict()
    torch.manual_seed(0)  # whatever happened to the global RNG since (training)
    again = report.starting_model(args, "fgssl", seed=5).fgssl.state_dict()
    other = report.starting_model(args, "fgssl", seed=6).fgssl.state_dict()
    assert all(torch.equal(initial[k], again[k]) for k in initial)
    assert not all(torch.equal(initial[k], other[k]) for k in initial)
    assert report.start_label(args) == "random init"
    assert report.start_label(ModelArguments(backbone="some/hub-backbone")) == "start (some/hub-backbone)"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 2-step fgssl run on a tiny synthetic dataset, through the command line, stdout captured."""
    root = tmp_path_factory.mktemp("report")
    make_fine_grained_dataset(num_classes=3, train_per_class=6, test_per_class=3, image_size=32).save_to_disk(
        str(root / "data"))
    argv = ["--dataset_name", str(root / "data"), "--image_size", "32", "--per_device_train_batch_size", "8",
            "--max_steps", "2", "--output_dir", str(root / "run"), "--report_to", "none", "--disable_tqdm", "true",
            "--save_strategy", "no", "--synth_warmup_steps", "1", "--synth_ramp_steps", "1", "--seed", "3"]
    return root / "run", argv


def test_the_run_prints_and_cards_the_comparison(tiny_run, capsys):
    out, argv = tiny_run
    results = main(argv)
    printed = capsys.readouterr().out
    assert "What pre-training changed" in printed and "random init (same backbone, seed 3)" in printed
    assert "this run (fgssl, 2 steps)" in printed
    assert f"Pictures: {results['pictures']}" in printed and Path(results["pictures"]).is_file()
    start = json.loads((out / "random_init" / "eval_results.json").read_text())
    run = json.loads((out / "eval_results.json").read_text())
    assert {"knn_top1", "linear_top1", "retrieval_map"} <= set(start) and start["num_images"] == run["num_images"]
    rows = _rows((out / "comparison.md").read_text())
    assert rows["random init (same backbone, seed 3)"][0] == f"{100 * start['knn_top1']:.1f} %"
    card = (out / "README.md").read_text()
    assert card.count("random init (same backbone, seed 3)") == 1
    assert report.read_comparison(out).keys() == {"run", "start"}
    from fgssl.training import runinfo

    assert runinfo.readme_is_ours(out)  # the card with the table is the one recorded: a rerun may replace it


def test_compare_with_start_false_skips_the_second_evaluation(tiny_run, tmp_path, capsys):
    _, argv = tiny_run
    out = tmp_path / "run"
    argv = [*argv[: argv.index("--output_dir")], "--output_dir", str(out), *argv[argv.index("--output_dir") + 2 :]]
    results = main([*argv, "--compare_with_start", "false"])
    assert "What pre-training changed" not in capsys.readouterr().out
    assert (out / "eval_results.json").is_file() and not (out / "random_init").exists()
    assert "comparison" not in results and "random init" not in (out / "README.md").read_text()
