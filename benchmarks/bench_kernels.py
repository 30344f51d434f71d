"""Speed of the normalization kernels: the same table as `normlab bench` (pass --quick or --json FILE).

    PYTHONPATH=src python3 benchmarks/bench_kernels.py [--quick] [--json FILE]

Targets (issue 8): batch norm forward + backward on float32 (128, 64, 32, 32) at least 3x faster than
torch's CPU kernel ("x torch" >= 3) and at least 60% of the copy limit ("% limit" >= 60); layer norm on
(8192, 768) at least as fast as torch ("x torch" >= 1).
"""

import sys

from normlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
