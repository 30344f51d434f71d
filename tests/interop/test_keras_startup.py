"""Importing TensorFlow through normlab prints its start-up lines once each (TensorFlow itself logs them
once per shared library that carries them: twice)."""

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

from optional import require

SRC = Path(__file__).resolve().parents[2] / "src"


def test_tensorflow_start_up_lines_are_printed_once_each():
    require("tensorflow", "tensorflow")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # TensorFlow's own default, as a user has it (conftest quiets it)
    code = "from normlab.interop.keras import import_keras; import_keras(); import tensorflow; print('imported')"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                            check=True)
    assert result.stdout.strip() == "imported"
    messages = Counter(re.sub(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ", "", line) for line in result.stderr.splitlines())
    assert all(count == 1 for count in messages.values()), messages
