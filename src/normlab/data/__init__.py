"""Datasets (Fashion-MNIST, MNIST, CIFAR-10): finding, downloading and verifying, reading without
executing anything, splitting, standardizing, augmenting, batching."""

from normlab.data.datasets import ImageDataset, available_datasets, load_dataset
from normlab.data.errors import ChecksumError, DataFormatError, DatasetNotFoundError, UnsafePickleError
from normlab.data.loader import batch_indices, epoch_order, num_batches
from normlab.data.transforms import Augment, Standardizer, random_crop, random_flip, train_val_split

__all__ = ["Augment", "ChecksumError", "DataFormatError", "DatasetNotFoundError", "ImageDataset", "Standardizer",
           "UnsafePickleError", "available_datasets", "batch_indices", "epoch_order", "load_dataset", "num_batches",
           "random_crop", "random_flip", "train_val_split"]
