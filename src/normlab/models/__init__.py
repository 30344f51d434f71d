"""Ready-made networks, built by name through `normlab.models.build_model`."""

from normlab.models.registry import available_models, build_model, register_model

__all__ = ["available_models", "build_model", "register_model"]
