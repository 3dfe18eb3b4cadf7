"""Imported first by the scripts in this folder, so that they run this checkout's ``hypermoe``.

Python puts only a script's own folder on sys.path, and ``import hypermoe`` then finds whatever the
active environment installed, which may be another checkout's editable install: a grid started
from a frozen worktree (``git worktree add --detach ../runs``) with the main checkout's .venv
active would run the main checkout's code, which changes under its jobs, and record its commit.
This puts the checkout's root first on sys.path and, when a script of this folder runs (not a test
importing one), on PYTHONPATH for the processes it starts: the benchmarks' workers import
``hypermoe`` afresh.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[:1] != [str(ROOT)]:
    sys.path.insert(0, str(ROOT))
script = sys.argv[0] if getattr(sys, "argv", None) else ""  # "-c", "" or absent when no script runs
if script.endswith(".py") and Path(script).resolve().parent == ROOT / "experiments":
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
