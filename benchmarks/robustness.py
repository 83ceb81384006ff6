"""Issue 22's probes, run as a new user would meet them: tiny CPU runs (seconds each), one pass/fail row per case.

    python benchmarks/robustness.py            # every case, a table at the end (exit 1 if any case fails)
    python benchmarks/robustness.py --only lock finished

Each case runs the console scripts' own entry (`cli(argv) -> exit status`) in this process on throw-away folders
under a temporary directory; the tests in tests/test_reruns.py, test_finite.py, test_finetune_reruns.py,
test_lock.py, test_usage_errors.py and test_results_tree.py hold the same cases as assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TINY = ["--max_train_samples", "32", "--image_size", "32", "--per_device_train_batch_size", "16",
        "--run_evaluation", "false", "--report_to", "none", "--disable_tqdm", "true", "--logging_steps", "1",
        "--method", "plain", "--save_steps", "1", "--save_total_limit", "5"]


def run(command, argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a console script's entry run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = command.cli([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def one_line_error(status, out, err, code, needle) -> tuple[bool, str]:
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    ok = status == code and len(lines) == 1 and needle in lines[0] and "Traceback" not in err
    return ok, (lines[-1] if lines else f"exit {status}")[:110]


# ------------------------------------------------------------------------------------------------ fixtures


def image_folder(root: Path) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 4)):
        for label, colour in enumerate(((220, 40, 40), (40, 40, 220))):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import ViTConfig

    from fgssl.modeling import FGSSLConfig, FGSSLModel

    torch.manual_seed(0)
    backbone = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         image_size=32, patch_size=8)
    FGSSLModel(FGSSLConfig(backbone_config=backbone, projector_hidden_size=64, projector_dim=16, queue_size=32,
                           use_decoder=False)).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------------ cases


def case_full_disk(tmp: Path):
    from fgssl.training import checkpoints, pretrain
    from fgssl.training.trainer import FGSSLTrainer

    out, save = tmp / "run", FGSSLTrainer._save

    def failing(self, output_dir=None, state_dict=None):
        if self.state.global_step == 3 and "checkpoint-3" in str(output_dir):
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{")
            raise OSError(28, "No space left on device")
        return save(self, output_dir, state_dict)

    FGSSLTrainer._save = failing
    try:
        first, _, _ = run(pretrain, [*TINY, "--max_steps", "3", "--output_dir", out])
    finally:
        FGSSLTrainer._save = save
    status, _, err = run(pretrain, [*TINY, "--max_steps", "3", "--output_dir", out])
    ok = (first == 1 and status == 0 and checkpoints.checkpoint_problem(out / "checkpoint-3") is None
          and (out / checkpoints.SET_ASIDE / "checkpoint-3").is_dir())
    return ok, f"first run exit {first} (disk full at checkpoint-3), rerun exit {status}, resumed from checkpoint-2"


def case_kill_9_during_save(tmp: Path):
    """A real kill -9 of a run while it writes checkpoint-3 (the save is slowed down to be caught), then a rerun."""
    from fgssl.training import checkpoints

    out = tmp / "run"
    code = ("import sys, time; from fgssl.training import pretrain; from fgssl.training.trainer import FGSSLTrainer\n"
            "save = FGSSLTrainer._save\n"
            "def slow(self, output_dir=None, state_dict=None):\n"
            "    r = save(self, output_dir, state_dict)\n"
            "    if self.state.global_step == 3: open(sys.argv[2], 'w').close(); time.sleep(120)\n"
            "    return r\n"
            "FGSSLTrainer._save = slow\n"
            "pretrain.cli(sys.argv[3:])\n")
    flag = tmp / "saving"
    process = subprocess.Popen([sys.executable, "-c", code, "x", str(flag), *TINY, "--max_steps", "4",
                                "--output_dir", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not flag.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.kill()
    process.wait()
    from fgssl.training import pretrain

    status, _, err = run(pretrain, [*TINY, "--max_steps", "4", "--output_dir", out])
    state = json.loads((out / "train_results.json").read_text()) if (out / "train_results.json").exists() else {}
    ok = flag.exists() and status == 0 and state.get("global_step") == 4 and (out / checkpoints.SET_ASIDE).is_dir()
    if not ok:
        return False, f"flag {flag.exists()}, exit {status}: " + (err.strip().splitlines() or [""])[-1][:90]
    return ok, f"killed while saving checkpoint-3; rerun exit {status}, step {state.get('global_step')}, " \
               f"aside: {sorted(p.name for p in (out / checkpoints.SET_ASIDE).glob('*'))}"


def case_finished_mid_epoch(tmp: Path):
    from fgssl.training import pretrain

    out = tmp / "run"
    argv = [*TINY, "--max_steps", "3", "--output_dir", out, "--save_total_limit", "2"]
    run(pretrain, argv)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    status, stdout, _ = run(pretrain, argv)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    lines = stdout.strip().splitlines()
    ok = status == 0 and len(lines) == 1 and "nothing to do" in lines[0] and before == after
    return ok, (lines[-1] if lines else "")[-110:]


def case_lr_inf(tmp: Path, which: str):
    from fgssl.training import finetune, pretrain

    command, argv = (pretrain, TINY) if which == "pretrain" else (finetune, ["--model_name_or_path", "m",
                                                                            "--dataset_name", "d"])
    return one_line_error(*run(command, [*argv, "--learning_rate", "inf", "--output_dir", tmp / "o"]), 2,
                          "--learning_rate must be a finite number")


def case_nan_loss(tmp: Path):
    from fgssl.training import checkpoints, pretrain
    from fgssl.training.trainer import FGSSLTrainer

    compute = FGSSLTrainer.compute_loss
    FGSSLTrainer.compute_loss = lambda self, *a, **k: compute(self, *a, **k) * (
        math.nan if self.state.global_step == 2 else 1.0)
    try:
        status, _, err = run(pretrain, [*TINY, "--max_steps", "4", "--output_dir", tmp / "run"])
    finally:
        FGSSLTrainer.compute_loss = compute
    ok, detail = one_line_error(status, "", err, 1, "step 3: the loss is nan")
    ok = ok and checkpoints.checkpoint_problem(tmp / "run" / "checkpoint-2") is None \
        and not (tmp / "run" / "model.safetensors").exists()
    return ok, detail


def finetune_argv(tmp: Path, out: Path, *extra):
    model = tmp.parent / "model"
    if not model.exists():
        tiny_model(model)
        image_folder(tmp.parent / "data")
    return ["--model_name_or_path", model, "--dataset_name", tmp.parent / "data", "--output_dir", out,
            "--image_size", "32", "--per_device_train_batch_size", "8", "--max_steps", "2", "--use_cpu",
            "--disable_tqdm", "true", "--save_strategy", "steps", "--save_steps", "1", "--eval_strategy", "no",
            *extra]


def case_finetune_other_run(tmp: Path):
    from fgssl.training import finetune

    out = tmp / "ft"
    run(finetune, finetune_argv(tmp, out))
    status, _, err = run(finetune, finetune_argv(tmp, out, "--method", "full"))
    ok, detail = one_line_error(status, "", err, 2, "holds a different run")
    status2, _, _ = run(finetune, finetune_argv(tmp, out, "--method", "full", "--overwrite_output_dir", "true"))
    names = {p.name for p in out.iterdir()}
    return ok and status2 == 0 and "model" in names and "adapter" not in names, detail


def case_finetune_resume(tmp: Path):
    from fgssl.training import finetune

    out = tmp / "ft"
    import logging

    run(finetune, finetune_argv(tmp, out))
    notes = []
    handler = logging.Handler()
    handler.emit = lambda record: notes.append(record.getMessage())
    logging.getLogger("fgssl.runinfo").addHandler(handler)
    try:
        status, stdout, err = run(finetune, finetune_argv(tmp, out, "--max_steps", "3"))
    finally:
        logging.getLogger("fgssl.runinfo").removeHandler(handler)
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    resumed = any("Resuming from" in n and "checkpoint-2" in n for n in notes)
    return status == 0 and resumed and state["global_step"] == 3, f"exit {status}, resumed: {resumed}"


def case_finetune_eval_none(tmp: Path):
    from fgssl.training import finetune

    out = tmp / "ft"
    status, _, err = run(finetune, finetune_argv(tmp, out, "--eval_split", "none", "--eval_strategy", "epoch"))
    ok = status == 0 and json.loads((out / "finetune_results.json").read_text())["accuracy"] is None
    return ok, f"exit {status}"


def case_lock(tmp: Path):
    from fgssl.training import pretrain, runinfo

    out = tmp / "run"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / runinfo.LOCK).write_text(json.dumps({"pid": sleeper.pid, "started": runinfo.process_start_time(sleeper.pid)}))
        ok, detail = one_line_error(*run(pretrain, [*TINY, "--max_steps", "1", "--output_dir", out]), 2,
                                    "in use by another run")
    finally:
        sleeper.kill()
        sleeper.wait()
    status, _, _ = run(pretrain, [*TINY, "--max_steps", "1", "--output_dir", out])  # the stale lock taken over
    return ok and status == 0 and not (out / runinfo.LOCK).exists(), detail


def usage_case(command_name, argv, needle, code=2):
    def case(tmp: Path):
        from fgssl.training import eval as eval_cli
        from fgssl.training import finetune, pretrain

        command = {"pretrain": pretrain, "finetune": finetune, "eval": eval_cli}[command_name]
        return one_line_error(*run(command, [a if a != "TMP" else tmp for a in argv]), code, needle)

    return case


def case_push_unreachable(tmp: Path):
    from fgssl.training import pretrain, push

    whoami, offline = push.HfApi.whoami, push._offline

    def unreachable(self, *a, **k):
        raise ConnectionError("Name or service not known")

    push.HfApi.whoami, push._offline = unreachable, lambda: False
    try:
        return one_line_error(*run(pretrain, [*TINY, "--push_to_hub", "true", "--hub_token", "hf_fake",
                                              "--output_dir", tmp / "o"]), 2, "Cannot reach the Hugging Face Hub")
    finally:
        push.HfApi.whoami, push._offline = whoami, offline


def case_no_shared_pictures(tmp: Path):
    out = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=REPO, capture_output=True, text=True)
    found = [p for p in out.stdout.split() if Path(p).name.startswith("synth_pairs") and p.endswith(".png")]
    return not found, f"{len(found)} synth_pairs_*.png tracked" + (f": {found[0]}..." if found else "")


CASES = {
    "full_disk": ("1 checkpoint cut short by a full disk", case_full_disk),
    "kill_9": ("1 kill -9 during a checkpoint save", case_kill_9_during_save),
    "finished": ("2 finished run at a mid-epoch max_steps", case_finished_mid_epoch),
    "lr_inf_pretrain": ("3 --learning_rate inf (pretrain)", lambda t: case_lr_inf(t, "pretrain")),
    "lr_inf_finetune": ("3 --learning_rate inf (finetune)", lambda t: case_lr_inf(t, "finetune")),
    "nan_loss": ("3 non-finite loss stops the run", case_nan_loss),
    "finetune_other_run": ("4 finetune: another run refused / overwrite", case_finetune_other_run),
    "finetune_resume": ("4 finetune: resume from the last checkpoint", case_finetune_resume),
    "finetune_eval_none": ("4 finetune --eval_split none", case_finetune_eval_none),
    "empty_dataset": ("5 --dataset_name \"\"", usage_case("pretrain", [*TINY, "--dataset_name", ""], "is empty")),
    "push_unreachable": ("6 --push_to_hub, Hub unreachable", case_push_unreachable),
    "lock": ("7 second run into a live run's folder", case_lock),
    "output_file": ("8 --output_dir is a file", usage_case("pretrain", [*TINY, "--output_dir", __file__], "is a file")),
    "huge_image": ("8 --image_size 100000", usage_case("pretrain", [*TINY, "--image_size", "100000"], "larger than")),
    "max_steps_0": ("8 --max_steps 0", usage_case("pretrain", [*TINY, "--max_steps", "0"], "trains no step")),
    "push_no_token": ("8 finetune --push_to_hub without a token",
                      usage_case("finetune", ["--model_name_or_path", "m", "--dataset_name", "d", "--push_to_hub",
                                              "true", "--hub_token", ""], "--push_to_hub")),
    "eval_missing_path": ("8 fgssl-eval on a missing local path",
                          usage_case("eval", ["--model_name_or_path", "./no/such/model", "--dataset_name", "d"],
                                     "no such file")),
    "shared_pictures": ("10 no synth_pairs_*.png tracked in results", case_no_shared_pictures),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="Run these cases only.")
    args = parser.parse_args(argv)
    import logging

    logging.disable(logging.INFO)  # the cases' own logs stay out of the table
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for i, name in enumerate(args.only or CASES):
            title, case = CASES[name]
            tmp = Path(root) / f"case{i}" / "work"
            tmp.mkdir(parents=True)
            started = time.time()
            try:
                ok, detail = case(tmp)
            except Exception as err:  # noqa: BLE001  (a case that crashes fails)
                ok, detail = False, f"{type(err).__name__}: {err}"[:110]
            rows.append((title, ok, time.time() - started, detail))
            print(f"{'PASS' if ok else 'FAIL'} {title} ({rows[-1][2]:.1f} s)", file=sys.stderr, flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
    print("| case | result | s | detail |\n|---|---|---|---|")
    for title, ok, seconds, detail in rows:
        print(f"| {title} | {'pass' if ok else 'FAIL'} | {seconds:.1f} | {detail.replace('|', '/')} |")
    print(f"\n{sum(ok for _, ok, _, _ in rows)}/{len(rows)} pass")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
