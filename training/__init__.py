"""Training side of fgssl (imports `modeling`, never the other way round).

Commands (console scripts, thin: arguments -> checks -> model -> data -> Trainer -> results, over the library below)

- `pretrain.py`     fgssl-pretrain: self-supervised pre-training (`main`, `cli`, `parse_args`, `run_pretraining`)
- `eval.py`         fgssl-eval: retrieval / kNN / linear-probe evaluation of a frozen encoder
- `finetune.py`     fgssl-finetune: classification fine-tuning (full or LoRA via peft)
- `push.py`         fgssl-push, and `push_to_hub`, the upload the other commands call after saving
- `prepare.py`      fgssl-prepare: a dataset folder converted once to a save_to_disk folder or a Hub dataset
- `cli.py`          what the commands share: exit statuses, one-line `UsageError`s, the argument parsers, checks

Library

- `arguments.py`    the commands' argument dataclasses (each flag defined once), config files, the demo recipe
- `data.py`         load a Hub id / image folder / save_to_disk dir, find columns, decode + resize once (uint8 cache),
                    skip and count unreadable images, collate
- `decoding.py`     one stored image (any mode, EXIF orientation) -> uint8 3 x S x S (`decode_image`)
- `layouts.py`      CUB-200-2011, Stanford Cars and FGVC-Aircraft folders as their authors distribute them
- `synthetic.py`    the embedded fine-grained default dataset (classes differ in a small detail, nuisance varies)
- `augment.py`      the two MoCo v2 views, batched on the training device (kornia); the evaluation transform
- `backbones.py`    backbone presets, the final feature map's side, the model a pre-training run builds
- `pretrained.py`   a model to start from or to measure: an fgssl checkpoint or a plain transformers backbone
- `processor.py`    the image processor saved with every fgssl model (the preprocessing it was trained with)
- `objective.py`    docs/method.md steps 1-8 as small functions (InfoNCE, variance and Grad-CAM criteria, masks,
                    perturbations, reconstruction and synthesized-pair losses, LCR)
- `bases.py`        the base objectives (MoCo v2, SimSiam) as small objects: one step's L_C and its Grad-CAM inputs
- `methods.py`      what each `--method` adds to the base, and one training step's loss composed of the two
- `trainer.py`      `FGSSLTrainer(transformers.Trainer)`: one docs/method.md step in `compute_loss`; momentum + queue
                    once per optimiser step; `ObjectiveArguments`
- `shuffle_bn.py`   Shuffle BN for the key encoder (MoCo), across processes or in groups of the batch
- `callbacks.py`    optional online kNN monitor
- `checkpoints.py`  checkpoints that are always whole, weights that are never non-finite
- `atomic.py`       atomic file writes (results, records, cards)
- `runinfo.py`      safe re-runs: the run's fingerprint, resume / refuse / overwrite, the output folder's lock
- `portable.py`     what we write carries no absolute machine path and no token
- `pretraining.py`  the steps of a pre-training run around `FGSSLTrainer` (checks, model folders, records,
                    evaluation, card)
- `finetuning.py`   classification fine-tuning as library functions (classifier, LoRA, Trainer, saving, cards)
- `evaluation.py`   retrieval / kNN / linear probe (metrics are `evaluate` modules in `metrics/`)
- `eval_pictures.py` retrieval and embedding pictures of an evaluation;  `pictures.py`  PNG sheets of synthesized
                    pairs, training curves
- `report.py`       what a run learned: this run vs the encoder it started from, in a small table
- `card.py`         the model card (hub_cards/model_card_template.md rendered)
"""
