"""Ready-made networks, built by name through `normlab.models.build_model`."""

from normlab.models.cnn import ResNetCNN, ThreeLayerConvNet  # importing cnn registers "convnet3" and "bn-cnn"
from normlab.models.fcnet import FullyConnectedNet
from normlab.models.registry import available_models, build_model, model_builder, register_model

__all__ = ["FullyConnectedNet", "ResNetCNN", "ThreeLayerConvNet", "available_models", "build_model", "model_builder",
           "register_model"]
