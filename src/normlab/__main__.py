import sys

from normlab.cli import main

# Guarded: a child process started with multiprocessing's "spawn" (normlab check) imports this module again.
if __name__ == "__main__":
    sys.exit(main())
