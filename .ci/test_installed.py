"""Install a kdloss wheel or sdist into this interpreter's environment and test it there.

Usage: ``PYTHON .ci/test_installed.py DIST [--fast]``. pip installs ``DIST[test]`` (building an
sdist from source); the tests then run from a temporary directory outside the source tree, with
kdloss imported first and checked to come from this environment's ``sys.prefix``, never from
the checkout's ``python/``. ``--fast`` runs a few files and stops at the first failure instead
of the whole suite. ``.ci/wheels`` runs this on every CPython of the machine and on the sdist,
and ``.github/workflows/wheels.yml`` on each wheel and the sdist it builds.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAST = ["tests/test_api.py", "tests/test_errors.py", "tests/test_gradient.py"]


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2) or (len(argv) == 2 and argv[1] != "--fast"):
        sys.exit(__doc__)
    dist, fast = argv[0], len(argv) == 2
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"{dist}[test]"], check=True)
    importlib.invalidate_caches()
    import kdloss
    import pytest

    where = os.path.normcase(os.path.realpath(kdloss.__file__))
    prefix = os.path.normcase(os.path.realpath(sys.prefix))
    print(f"kdloss {kdloss.__version__} imported from {where}", flush=True)
    if not where.startswith(prefix + os.sep):
        sys.exit(f"kdloss was imported from {where}, outside the environment {prefix}")
    selected = [str(ROOT / name) for name in FAST] if fast else [str(ROOT / "tests")]
    args = ["-q", "-p", "no:cacheprovider", *(["-x"] if fast else []), *selected]
    with tempfile.TemporaryDirectory() as here:
        os.chdir(here)
        try:
            return int(pytest.main(args))
        finally:
            os.chdir(ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
