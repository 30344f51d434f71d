"""normlab models in other frameworks, and folded for inference.

- `normlab.interop.torch`: `to_torch(model)` / `from_torch(module)`, twins with the same state dict names.
- `normlab.interop.keras`: `to_keras(model, input_shape=None)`, a Keras 3 (TensorFlow) twin, channels-last
  (input_shape, one sample's (C, H, W), needed when the model does not start with a Linear).
- `normlab.interop.fold`: `fold_batchnorm(model)`, evaluation-mode batch norm merged into the Linear or
  Conv2d before it.

PyTorch and TensorFlow are imported only when a conversion runs (`pip install "normlab[torch]"`,
`pip install "normlab[tensorflow]"`).
"""

from normlab.interop.fold import fold_batchnorm
from normlab.interop.keras import state_dict_from_keras, to_keras
from normlab.interop.torch import from_torch, to_torch

__all__ = ["fold_batchnorm", "from_torch", "state_dict_from_keras", "to_keras", "to_torch"]
