"""fgssl models: encoder (`FGSSLModel`), classifier, pre-training model and the diffusers decoder.

Self-contained (torch, transformers, diffusers only) so the three files travel to the Hub as remote code.
Importing this package registers the Auto classes, so `AutoModel.from_pretrained(<fgssl folder>)` works without
`trust_remote_code`, and marks the classes for `register_for_auto_class`, so every saved folder also carries the
code for users who do not have the package.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .configuration_fgssl import FGSSLConfig
from .decoder_fgssl import FGSSLDecoder
from .modeling_fgssl import (
    FGSSLForImageClassification,
    FGSSLForPreTraining,
    FGSSLModel,
    FGSSLModelOutput,
    FGSSLPreTrainedModel,
    FGSSLPreTrainingOutput,
    VarianceTracker,
)

AutoConfig.register(FGSSLConfig.model_type, FGSSLConfig, exist_ok=True)
AutoModel.register(FGSSLConfig, FGSSLModel, exist_ok=True)
AutoModelForImageClassification.register(FGSSLConfig, FGSSLForImageClassification, exist_ok=True)
AutoModelForPreTraining.register(FGSSLConfig, FGSSLForPreTraining, exist_ok=True)

FGSSLConfig.register_for_auto_class()
FGSSLModel.register_for_auto_class("AutoModel")
FGSSLForImageClassification.register_for_auto_class("AutoModelForImageClassification")
FGSSLForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "FGSSLConfig",
    "FGSSLDecoder",
    "FGSSLModel",
    "FGSSLModelOutput",
    "FGSSLForImageClassification",
    "FGSSLForPreTraining",
    "FGSSLPreTrainedModel",
    "FGSSLPreTrainingOutput",
    "VarianceTracker",
]
