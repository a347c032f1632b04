"""Choose the shakespeare learning rate from the shakespeare_lr sweep in a queue database.

Rule (decided before the sweep ran): the rate with the lowest mean best validation loss of Standard
and HAARES at 500 steps, seed 42; ties go to the smaller rate. Prints a table, then the rate alone.
Usage: python3 benchmarks/pick_lr.py QUEUE.db
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import defaultdict

from haares.grids import expand, get_grid

keys = {run.run_key: (run.config.train.lr, run.method) for run in expand(get_grid("shakespeare_lr"))}
db = sqlite3.connect(sys.argv[1])
found: dict[float, dict[str, float]] = defaultdict(dict)
for run_key, best, status in db.execute("SELECT run_key, best_val_loss, status FROM jobs"):
    if run_key in keys and status == "succeeded" and best is not None:
        lr, method = keys[run_key]
        found[lr][method] = best
complete = {lr: sum(v.values()) / len(v) for lr, v in found.items() if len(v) == 2}
for lr in sorted(found):
    print(f"lr {lr:g}: {json.dumps(found[lr])} mean {complete.get(lr, float('nan')):.4f}")
if not complete:
    print("no complete pair in the sweep; keeping the grid's rate")
    print(get_grid("shakespeare").base.train.lr)
else:
    print(min(sorted(complete), key=lambda lr: complete[lr]))
