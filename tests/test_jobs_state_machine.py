"""Property test of the queue on SQLite (Hypothesis RuleBasedStateMachine): random claim / heartbeat /
record_eval / finish / cancel / hold / release / retry / reap / clock-advance steps. Invariants: only legal
state edges, at most one open attempt per job (exactly one, with the job's token, while running),
stale-token writes change nothing, and `succeeded` is never left."""

from __future__ import annotations

import shutil
import tempfile
from datetime import datetime, timedelta

import sqlalchemy as sa
from fixtures.sleep_kind import enqueue_sleep
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from haares.jobs import cancel, claim, finish, heartbeat, hold, make_engine, reap, record_eval, release, retry
from haares.jobs import db as jobs_db
from haares.jobs.schema import Attempt, Eval, Job

TTL = 30.0
LEGAL = {
    ("queued", "running"), ("queued", "held"), ("queued", "cancelled"),
    ("held", "queued"), ("held", "cancelled"),
    ("running", "queued"), ("running", "succeeded"), ("running", "failed"), ("running", "cancelled"),
    ("failed", "queued"), ("cancelled", "queued"),
}


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="haares-sm-")
        self.now = datetime(2026, 1, 1)
        self.saved_clock = jobs_db.clock
        jobs_db.clock = lambda: self.now
        self.engine = make_engine(f"sqlite:///{self.dir}/q.db")
        self.ids = list(enqueue_sleep(engine=self.engine, count=3, seconds=0).job_ids)
        self.leases: list = []
        self.ever_succeeded: set[int] = set()
        self.states = self.snapshot()[0]

    def teardown(self) -> None:
        self.engine.dispose()
        jobs_db.clock = self.saved_clock
        shutil.rmtree(self.dir, ignore_errors=True)

    def snapshot(self) -> tuple[dict[int, str], list, list]:
        with self.engine.connect() as conn:
            jobs = conn.execute(sa.select(Job).order_by(Job.id)).all()
            evals = conn.execute(sa.select(Eval).order_by(Eval.id)).all()
        return {j.id: j.status for j in jobs}, [tuple(j) for j in jobs], [tuple(e) for e in evals]

    def live(self, lease) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(Job.status, Job.lease_token).where(Job.id == lease.job_id)).one()
        return row.status == "running" and row.lease_token == lease.token

    def check_edges(self) -> None:
        after = self.snapshot()[0]
        for jid, old in self.states.items():
            new = after[jid]
            assert old == new or (old, new) in LEGAL, f"illegal edge {old} -> {new} for job {jid}"
            if old == "succeeded":
                assert new == "succeeded"
        self.ever_succeeded |= {j for j, s in after.items() if s == "succeeded"}
        self.states = after

    # --- rules ---

    @rule(worker=st.sampled_from(["a", "b"]))
    def do_claim(self, worker):
        lease = claim(engine=self.engine, worker_id=worker, host="h", pid=1, pid_start=None, gpu=None, lease_ttl_s=TTL)
        if lease is not None:
            self.leases.append(lease)
        self.check_edges()

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), step=st.integers(0, 5))
    def do_heartbeat(self, data, step):
        lease = data.draw(st.sampled_from(self.leases))
        self._fenced_write(lease, lambda: heartbeat(engine=self.engine, lease=lease, lease_ttl_s=TTL,
                                                     progress={"step": step}).alive)

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), step=st.integers(0, 5), loss=st.floats(1.0, 5.0))
    def do_record_eval(self, data, step, loss):
        lease = data.draw(st.sampled_from(self.leases))
        point = {"step": step, "tokens": step, "train_seconds": 1.0, "val_loss": loss}
        self._fenced_write(lease, lambda: record_eval(engine=self.engine, lease=lease, point=point))

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), outcome=st.sampled_from(["succeeded", "failed", "preempted", "cancelled"]),
          terminal=st.booleans())
    def do_finish(self, data, outcome, terminal):
        lease = data.draw(st.sampled_from(self.leases))
        self._fenced_write(lease, lambda: finish(engine=self.engine, lease=lease, outcome=outcome, terminal=terminal))

    def _fenced_write(self, lease, write) -> None:
        live = self.live(lease)
        before = self.snapshot()
        ok = write()
        assert ok is live
        if not live:
            assert self.snapshot()[1:] == before[1:], "a stale-token write changed the database"
        self.check_edges()

    @rule(index=st.integers(0, 2), op=st.sampled_from([cancel, hold, release, retry]), fresh=st.booleans())
    def do_admin(self, index, op, fresh):
        op(engine=self.engine, job_ids=[self.ids[index]], fresh=fresh)
        self.check_edges()

    @rule()
    def do_reap(self):
        reap(engine=self.engine)
        self.check_edges()

    @rule(seconds=st.sampled_from([1, 10, 29, 31, 100, 400]))
    def advance_clock(self, seconds):
        self.now += timedelta(seconds=seconds)

    # --- invariants ---

    @invariant()
    def one_open_attempt_per_job(self):
        with self.engine.connect() as conn:
            jobs = {j.id: j for j in conn.execute(sa.select(Job.id, Job.status, Job.lease_token))}
            open_ = conn.execute(sa.select(Attempt.job_id, Attempt.lease_token).where(Attempt.ended_at.is_(None))).all()
        per_job: dict[int, list[str]] = {}
        for jid, token in open_:
            per_job.setdefault(jid, []).append(token)
        for jid, job in jobs.items():
            tokens = per_job.get(jid, [])
            if job.status == "running":
                assert tokens == [job.lease_token]
            else:
                assert tokens == [] and job.lease_token is None

    @invariant()
    def succeeded_is_never_left(self):
        assert all(self.states[j] == "succeeded" for j in self.ever_succeeded)


QueueMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestQueueStateMachine = QueueMachine.TestCase
