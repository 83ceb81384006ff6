"""fgssl: self-supervised pre-training of image encoders for fine-grained recognition (one import namespace).

The repository keeps the design card's top-level folders `modeling/`, `training/` and `hub_cards/`; installed, they
are `fgssl.modeling`, `fgssl.training` and `fgssl.hub_cards` (setuptools `package-dir` in pyproject.toml), so no
bare `modeling` or `training` ever lands in site-packages. `import fgssl` registers the Auto classes:

    import fgssl
    from transformers import AutoModel
    encoder = AutoModel.from_pretrained("outputs/fgssl-synthetic")
"""

from pathlib import Path as _Path

# In a source checkout (no install) the sub-packages sit beside this folder, at the repository's top.
if not (_Path(__file__).resolve().parent / "modeling").is_dir():
    __path__.append(str(_Path(__file__).resolve().parent.parent))  # noqa: F821 (a package's own __path__)

from .modeling import (  # noqa: E402  (registers the Auto classes)
    FGSSLConfig,
    FGSSLForImageClassification,
    FGSSLForPreTraining,
    FGSSLModel,
)

__version__ = "0.1.0"
__all__ = ["FGSSLConfig", "FGSSLModel", "FGSSLForImageClassification", "FGSSLForPreTraining", "__version__"]
