"""Training side of fgssl (imports `modeling`, never the other way round).

- `data.py`       load a Hub id / image folder / save_to_disk dir, find columns, decode + resize once (uint8 cache),
                  skip and count unreadable images, collate
- `synthetic.py`  the embedded fine-grained default dataset (classes differ in a small detail, nuisance varies)
- `augment.py`    the two MoCo v2 views, batched on the training device (kornia)
- `objective.py`  docs/method.md steps 1-8 as small functions (InfoNCE, variance and Grad-CAM criteria, masks,
                  perturbations, reconstruction and synthesized-pair losses, LCR)
- `trainer.py`    `FGSSLTrainer(transformers.Trainer)`: one docs/method.md step in `compute_loss`; momentum + queue once
                  per optimiser step
- `callbacks.py`  optional online kNN monitor;  `pictures.py`  PNG sheets of synthesized pairs, training curves
- `evaluation.py` retrieval / kNN / linear probe (metrics are `evaluate` modules in `metrics/`)
- `finetune.py`   classification fine-tuning (full or LoRA via peft);  `card.py`, `push.py`  model card, Hub upload
- `pretrain.py`, `eval.py`, `finetune.py`, `push.py`  thin command-line entry points (fgssl-pretrain, fgssl-eval,
                  fgssl-finetune, fgssl-push)
"""
