"""Model-card templates (Jinja2 markdown rendered by huggingface_hub.ModelCard.from_template)."""

from pathlib import Path

#: The fgssl model-card template: YAML metadata from ModelCardData, then the card's sections.
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"

__all__ = ["MODEL_CARD_TEMPLATE"]
