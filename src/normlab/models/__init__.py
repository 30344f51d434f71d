"""Ready-made networks, built by name through `normlab.models.build_model`."""

from normlab.models.cnn import ResNetCNN, ThreeLayerConvNet  # importing cnn registers "convnet3" and "bn-cnn"
from normlab.models.registry import available_models, build_model, register_model

__all__ = ["ResNetCNN", "ThreeLayerConvNet", "available_models", "build_model", "register_model"]
