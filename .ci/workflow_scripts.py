"""Write every ``run:`` script of the GitHub workflows given as files, for shellcheck to read.

Usage: ``python .ci/workflow_scripts.py OUT_DIR WORKFLOW.yml...``; prints the files written.
Each script gets the shebang and options GitHub runs it with (``bash -e -o pipefail``, or
``sh -e``), and every ``${{ ... }}`` expression is replaced by a word of the same length, as
GitHub substitutes them before the shell sees the script. A step whose shell is neither bash
nor sh is an error, so nothing goes unchecked.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

HEADERS = {"bash": "#!/usr/bin/env bash\nset -eo pipefail\n", "sh": "#!/bin/sh\nset -e\n"}
EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


def _shell(*levels: Any) -> str:
    for level in levels:
        shell = (level or {}).get("shell")
        if shell:
            return str(shell)
    return "bash"


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.exit(__doc__)
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for workflow in map(Path, argv[1:]):
        doc = YAML(typ="safe").load(workflow.read_text(encoding="utf-8"))
        top = (doc.get("defaults") or {}).get("run")
        for job_id, job in (doc.get("jobs") or {}).items():
            job_default = (job.get("defaults") or {}).get("run")
            for index, step in enumerate(job.get("steps") or []):
                if "run" not in step:
                    continue
                shell = _shell(step, job_default, top)
                if shell not in HEADERS:
                    sys.exit(f"{workflow}: job {job_id}, step {index}: shell {shell!r} unchecked")
                body = EXPRESSION.sub(lambda m: "_" * len(m.group()), str(step["run"]))
                path = out / f"{workflow.stem}-{job_id}-{index}.sh"
                path.write_text(HEADERS[shell] + body, encoding="utf-8")
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
