"""The VM-UNet model family: ``create_model(name, num_classes=..., in_chans=..., weights=...)``."""

from vmunet.models.registry import count_parameters, create_model, list_models, model_config
from vmunet.models.vmunet import VMUNet

__all__ = ["VMUNet", "count_parameters", "create_model", "list_models", "model_config"]
