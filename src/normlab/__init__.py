"""normlab: batch normalization and its relatives, understood, checked and used, in NumPy."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # normlab.load_run without importing the training stack on `import normlab`.
    if name == "load_run":
        from normlab.train.saved_run import load_run

        return load_run
    raise AttributeError(f"module 'normlab' has no attribute {name!r}")
