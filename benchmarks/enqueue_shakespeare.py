"""Enqueue shakespeare (48L cell first, then 24L, 12L) and shakespeare_ablations at a learning rate.

The same as `haares enqueue --grid shakespeare` when the rate equals grids.SHAKESPEARE_LR (as it is
once the sweep's choice is committed there); given another rate it overrides train.lr for both
grids, so the allocation that ran the sweep can go on at once. Usage: enqueue_shakespeare.py LR
"""

from __future__ import annotations

import sys

from haares.grids import expand, get_grid
from haares.jobs import enqueue_runs, make_engine
from haares.provenance import code_ref
from haares.settings import resolve_db_url

lr = float(sys.argv[1])
engine = make_engine(resolve_db_url(None))
try:
    runs = expand(get_grid("shakespeare"), overrides={"train.lr": lr})
    for priority, cell in ((3, "48L"), (2, "24L"), (1, "12L")):
        chosen = [r for r in runs if r.cell == cell]
        result = enqueue_runs(engine=engine, grid="shakespeare", runs=chosen, priority=priority, code_ref=code_ref())
        print(f"shakespeare {cell} lr {lr:g}: {result.new} new, {result.existing} existing")
    ablations = expand(get_grid("shakespeare_ablations"), overrides={"train.lr": lr})
    result = enqueue_runs(engine=engine, grid="shakespeare_ablations", runs=ablations, priority=0, code_ref=code_ref())
    print(f"shakespeare_ablations lr {lr:g}: {result.new} new, {result.existing} existing")
finally:
    engine.dispose()
