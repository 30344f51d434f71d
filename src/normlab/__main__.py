import sys

from normlab.cli import main

# Guarded: mpi4py.futures workers (and multiprocessing's spawn) import the main module under another name.
if __name__ == "__main__":
    sys.exit(main())
