"""fgssl-push: upload a saved model folder (weights, config, remote code, model card) to the Hugging Face Hub.

    fgssl-push <dir> <repo_id> [--private] [--token T] [--commit_message M] [--no_card]

`push_to_hub(dir, repo_id, ...)` is the library function the pre-training and fine-tuning CLIs call after
saving locally: it uploads an allow-list (ALLOW_PATTERNS: weights, configs, code, image processor, card, results,
pictures, encoder/ and decoder/), never stray files, and renders the card with the repository id.
`check_hub_access()` is what they call BEFORE training when asked to push (through `take_over_push`), so that a
missing token fails in seconds instead of after hours; `push_final_model` pushes the run's result at the end. Both raise HubPushError with the cause and the fix; the local
files are never touched by a failed push.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError

from .cli import SimpleArgumentParser, console_entry

NO_TOKEN_MESSAGE = (
    "No Hugging Face token found, so nothing can be pushed to the Hub. Log in with `hf auth login` or set the "
    "HF_TOKEN environment variable (a token with write access), or pass --token."
)
OFFLINE_MESSAGE = (
    "HF_HUB_OFFLINE is set, so the Hub cannot be reached. Unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to push."
)
logger = logging.getLogger(__name__)

#: A model folder's own files (save_pretrained of a transformers / peft model, remote code, image processor).
MODEL_FILES = ("config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
               "configuration_fgssl.py", "modeling_fgssl.py", "decoder_fgssl.py", "preprocessor_config.json",
               "adapter_config.json", "adapter_model.safetensors")
#: The decoder folder (diffusers format plus its code file).
DECODER_FILES = ("config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model-*-of-*.safetensors",
                 "diffusion_pytorch_model.safetensors.index.json", "decoder_fgssl.py")
#: The card and what it shows: results, curves, pictures of synthesized pairs.
RESULT_FILES = ("README.md", "train_results.json", "training_config.json", "eval_results.json", "eval_results.md",
                "finetune_results.json", "training_curves.png", "pairs_step*.png", "pictures/pairs_step*.png",
                "eval/eval_results.json", "eval/eval_results.md", "retrieval.png", "embedding.png",
                "eval/retrieval.png", "eval/embedding.png")
#: Exactly what is uploaded (upload_folder's allow_patterns, fnmatch on paths relative to the folder). No pattern
#: starts with a wildcard, so each is anchored at the folder's top.
ALLOW_PATTERNS = [*MODEL_FILES, *RESULT_FILES, *(f"encoder/{name}" for name in MODEL_FILES),
                  *(f"decoder/{name}" for name in DECODER_FILES)]
#: Local training state, never uploaded even where an allow pattern would match.
IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.pt", "*.pth", "optimizer.*", "scheduler.*",
                   "rng_state*", "trainer_state.json", "training_args.bin", ".git/**", "__pycache__/**"]


class HubPushError(RuntimeError):
    """Pushing to the Hub is impossible (no token, offline, unreachable, refused); the message says how to fix it."""


def _network_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the Hub could not be reached" (huggingface_hub's HTTP client raises its own)."""
    types: list[type[BaseException]] = [ConnectionError, TimeoutError, HfHubHTTPError]
    for module_name in ("httpx2", "httpx", "requests"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        error = getattr(module, "HTTPError", None) or getattr(module, "RequestException", None)
        if error is not None:
            types.append(error)
    return tuple(types)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def check_hub_access(token: str | None = None, check_network: bool = False) -> str:
    """The token to push with, or HubPushError before any work starts.

    Checks (in order) that a token exists (argument, HF_TOKEN or `hf auth login`) and that offline mode is off;
    with check_network=True it also asks the Hub who the token belongs to (fails when unreachable or invalid).
    """
    token = token or get_token()
    if not token:
        raise HubPushError(NO_TOKEN_MESSAGE)
    if _offline():
        raise HubPushError(OFFLINE_MESSAGE)
    if check_network:
        try:
            HfApi(token=token).whoami()
        except _network_error_types() as err:
            raise HubPushError(
                f"Cannot reach the Hugging Face Hub or the token was refused ({type(err).__name__}: {err}). Check "
                "the network and that the token is valid (`hf auth whoami`)."
            ) from err
    return token


def take_over_push(training_args) -> str | None:
    """The repository a training run pushes its final model to (--hub_model_id, else the output folder's name), or
    None without --push_to_hub. The Hub is checked now, before training (no token, offline, unreachable or the
    token refused: a one-line UsageError, so no work is lost), and Trainer's own pushes are switched off: the run
    pushes the final model once, with its card (`push_final_model`)."""
    if not training_args.push_to_hub:
        return None
    from .cli import UsageError

    try:
        check_hub_access(training_args.hub_token, check_network=True)
    except HubPushError as err:
        raise UsageError(f"--push_to_hub: {err} (or drop --push_to_hub and push later with fgssl-push).") from err
    training_args.push_to_hub = False
    return training_args.hub_model_id or Path(training_args.output_dir).name


def push_final_model(folder, repo_id: str, training_args, saved_note: str, private: bool | None = None) -> str:
    """`push_to_hub` of a run's final model with --hub_token; a failed push is a one-line error that adds
    `saved_note` (where the model is saved locally, how to push it later). Returns the commit URL."""
    from .cli import OneLineError

    try:
        return push_to_hub(folder, repo_id, token=training_args.hub_token, private=private)
    except HubPushError as err:
        raise OneLineError(f"{err} {saved_note}") from err


def ensure_remote_code(folder) -> list[str]:
    """Copy the fgssl modeling files into `folder` when its config.json auto_map needs them and they are missing.

    save_pretrained of an fgssl model already writes them; this covers folders assembled by hand. Returns the
    names copied.
    """
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    if config.get("model_type") != "fgssl":
        return []
    from .. import modeling

    source = Path(modeling.__file__).resolve().parent
    copied = []
    for name in ("configuration_fgssl.py", "modeling_fgssl.py", "decoder_fgssl.py"):
        if not (folder / name).is_file():
            shutil.copy2(source / name, folder / name)
            copied.append(name)
    return copied


def push_to_hub(folder, repo_id: str, token: str | None = None, private: bool | None = None,
                commit_message: str | None = None, write_card: bool = True, card_kwargs: dict | None = None,
                revision: str | None = None) -> str:
    """Upload `folder` (weights, config, remote code, image processor, README.md card, results) to `repo_id`.

    The token is checked first (before anything is written or sent). With write_card, the card is rendered into
    the folder with the repository's full id (after the repository exists) unless the folder holds a README.md of
    the user's own (card_kwargs go to training.card.write_model_card). Only ALLOW_PATTERNS are uploaded: training
    state (checkpoint-*, optimizer files, runs/) and stray files stay local.

    Returns:
        the URL of the commit.

    Raises:
        FileNotFoundError: `folder` does not exist.
        HubPushError: no token, offline mode, or the Hub unreachable / refusing; the local folder is unchanged
            except for an added card or remote code, and the message says how to retry.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder; pass the directory written by save_pretrained.")
    token = check_hub_access(token)
    ensure_remote_code(folder)
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        # "name" alone lands in the token owner's namespace: the card shows the full id users will type.
        repo_id = getattr(repo_url, "repo_id", None) or repo_id
        if write_card:
            write_card_for_push(folder, repo_id, card_kwargs)
        commit = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
            commit_message=commit_message or f"Upload fgssl model from {folder.name}",
            allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS,
        )
    except _network_error_types() as err:
        raise HubPushError(
            f"Could not push {folder} to {repo_id} ({type(err).__name__}: {err}). The files are safe in {folder}; "
            f"retry with `fgssl-push {folder} {repo_id}` once the Hub is reachable and the token can write there."
        ) from err
    return str(getattr(commit, "commit_url", commit))


def write_card_for_push(folder, repo_id: str, card_kwargs: dict | None = None) -> Path | None:
    """Render the card into folder/README.md for `repo_id`, unless README.md is the user's own (kept as it is).

    A README.md is ours when a run recorded it unchanged (training.runinfo) or it still has the card's marker line.
    """
    from . import runinfo
    from .card import is_fgssl_card, write_model_card

    readme = Path(folder) / "README.md"
    if readme.is_file() and not (runinfo.readme_is_ours(folder) or is_fgssl_card(readme)):
        logger.warning("%s is not an fgssl card (no '<!-- fgssl model card' line): uploading it unchanged.", readme)
        return None
    path = write_model_card(folder, repo_id=repo_id, **(card_kwargs or {}))
    runinfo.record_card(folder, path)  # the next run into this folder may still replace it
    return path


def build_parser() -> SimpleArgumentParser:
    parser = SimpleArgumentParser(prog="fgssl-push", description="Upload a saved fgssl model folder to the Hub.")
    parser.add_argument("folder", help="Folder written by save_pretrained (fgssl-pretrain / fgssl-finetune output).")
    parser.add_argument("repo_id", help="Hub model repository, e.g. your-name/fgssl-vit-cub.")
    parser.add_argument("--private", action="store_true", help="Create the repository as private.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`).")
    parser.add_argument("--commit_message", default=None, help="Commit message.")
    parser.add_argument("--no_card", action="store_true", help="Do not write a README.md model card.")
    parser.add_argument("--dataset_name", default=None, help="Pre-training data named on the card.")
    parser.add_argument("--base_model", default=None, help="Hub id of the checkpoint the model started from "
                        "(default: as recorded by the run, when it started from a Hub id).")
    parser.add_argument("--license", default=None, help="License of the weights for the card's metadata (a Hub "
                        "license id, e.g. apache-2.0 or cc-by-nc-4.0; default: as given to the run, else none stated: "
                        "the weights inherit their training data's terms).")
    return parser


def main(argv: list[str] | None = None) -> str:
    """fgssl-push as a library call: returns the commit URL; raises HubPushError (no token, offline, the Hub
    refusing) or FileNotFoundError (no such folder). The console script is `cli`: status 0 when pushed, 2 for a
    usage error or a missing folder, 1 when the push is impossible, each with one line saying why."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    card_kwargs = {k: v for k, v in (("dataset_name", args.dataset_name), ("base_model", args.base_model),
                                     ("license", args.license)) if v}
    url = push_to_hub(args.folder, args.repo_id, token=args.token, private=args.private or None,
                      commit_message=args.commit_message, write_card=not args.no_card, card_kwargs=card_kwargs)
    print(f"Pushed {args.folder} to {url}")
    return url


cli = console_entry(main, "fgssl-push", one_line_failures=(HubPushError,))

if __name__ == "__main__":
    sys.exit(cli())
