"""Does a run preempted on the fast path resume where its uninterrupted twin goes? (issue 11, GPU)

Trains one grid run through the trainer's own `train()`, on the path auto resolves for the device
(on CUDA: the router kernels, compiled sublayers, the whole step in one CUDA graph): once
uninterrupted (the twin), once stopped after step --stop-at (a checkpoint, then `Preempted`, as a
worker's SIGTERM does) and resumed in the same process, and with --repeat the twin once more from
scratch. Prints every eval's validation loss for each and their largest differences. On the CPU the
resumed run is bitwise its twin (tests/test_fastpath.py). GPU kernels are not bitwise repeatable, so
there the resumed run's distance to the twin is to be read against the twin's distance to its own
repeat (GPU noise).

    python benchmarks/resume_check.py --grid slots_check --method haares --steps 300 --eval-every 50 \
        --stop-at 120 --repeat --device cuda --json resume.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from haares.grids import expand, get_grid
from haares.train import TrainCallbacks, train
from haares.train_records import Preempted


def pick_run(grid: str, method: str, seed: int | None, steps: int, eval_every: int):
    """The grid's run of `method` (first seed, or `seed`) at `steps` steps, evaluated every `eval_every`."""
    runs = [r for r in expand(get_grid(grid), overrides={"train.steps": steps, "train.eval_every": eval_every})
            if r.method == method and (seed is None or r.seed == seed)]
    if not runs:
        raise SystemExit(f"grid {grid!r} has no run of method {method!r}" + (f" and seed {seed}" if seed else ""))
    return runs[0].config


def val_losses(result) -> dict[int, float]:
    return {p.step: p.val_loss for p in result.evals}


def resume_check(cfg, *, device: str, stop_at: int, repeat: bool, work: Path) -> dict:
    """Twin, cut-and-resumed (and repeat) runs of `cfg`; their eval losses and largest differences."""
    twin = train(cfg, device=device, run_dir=work / "twin")
    stop: list[bool] = []
    callbacks = TrainCallbacks(on_progress=lambda step, *_: stop.append(step >= stop_at), progress_interval_s=0)
    try:
        train(cfg, device=device, run_dir=work / "cut", callbacks=callbacks, should_stop=lambda: any(stop))
        raise SystemExit(f"the run finished before step {stop_at}: give --stop-at below --steps")
    except Preempted as cut:
        stopped_at = cut.step
    resumed = train(cfg, device=device, run_dir=work / "cut")
    curves = {"twin": val_losses(twin), "resumed": val_losses(resumed)}
    if repeat:
        curves["repeat"] = val_losses(train(cfg, device=device, run_dir=work / "repeat"))
    if not curves["twin"] or curves["twin"].keys() != curves["resumed"].keys():
        raise SystemExit(f"eval steps differ: twin {sorted(curves['twin'])}, resumed {sorted(curves['resumed'])}")

    def largest(a: str, b: str) -> float:
        return max(abs(curves[a][s] - curves[b][s]) for s in curves[a])

    out = {"device": twin.device, "stopped_at": stopped_at, "evals": {k: sorted(v.items()) for k, v in curves.items()},
           "resumed_vs_twin": largest("resumed", "twin")}
    if repeat:
        out["repeat_vs_twin"] = largest("repeat", "twin")
    out["fast_path"] = json.loads(twin.summary.read_text()).get("fast_path")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default="slots_check")
    parser.add_argument("--method", default="haares")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--stop-at", type=int, default=120, help="preempt after this step (then resume)")
    parser.add_argument("--repeat", action="store_true", help="train the twin a second time: the GPU's own noise")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    cfg = pick_run(args.grid, args.method, args.seed, args.steps, args.eval_every)
    with tempfile.TemporaryDirectory() as work:
        out = resume_check(cfg, device=args.device, stop_at=args.stop_at, repeat=args.repeat, work=Path(work))
    print(f"{args.grid} {args.method} on {out['device']} ({out['fast_path']}), preempted after step {out['stopped_at']}")
    for step, _ in out["evals"]["twin"]:
        row = "  ".join(f"{name} {dict(curve)[step]:.6f}" for name, curve in out["evals"].items())
        print(f"step {step:>6}  {row}")
    print(f"largest |resumed - twin| {out['resumed_vs_twin']:.3g}"
          + (f"; |repeat - twin| {out['repeat_vs_twin']:.3g}" if "repeat_vs_twin" in out else ""))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
