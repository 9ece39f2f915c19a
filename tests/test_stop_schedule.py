"""Stop checks without a per-step sync: with several processes, the loop all-gathers the stop flags
only at the steps the schedule names (from a time budget), at checkpoint steps and at the last one.

The loop runs in this process with two processes simulated: `loop._processes` says 2 and the
all-gather is replaced by one that records at which step it was called and what it was given
(the real 2-process runs are in tests/test_preemption.py). Every host-blocking call the loop
makes between checks would show here as a gather or a fetch at another step.
"""

import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from fer_jax import checkpoint as ckpt_lib
from fer_jax import loop, parallel, workdir as workdir_lib

STEPS = 120


class _Gather:
    """Stands in for multihost_utils.process_allgather on 2 processes; the other one may ask to stop."""

    def __init__(self, steps_seen, other_stops_at=None):
        self.steps_seen, self.other_stops_at = steps_seen, other_stops_at
        self.calls = []  # (step, this process's [flag, seconds per step])

    def __call__(self, x):
        step = len(self.steps_seen)
        self.calls.append((step, np.asarray(x).tolist()))
        other = np.asarray(x, np.float64).copy()
        other[0] = float(self.other_stops_at is not None and step >= self.other_stops_at)
        return np.stack([np.asarray(x, np.float64), other])


def _config(**changes):
    c = ml_collections.ConfigDict(dict(num_train_steps=STEPS, log_every=1000, checkpoint_every=50, seed=0,
                                       stop_check_s=0.05, progress_bar=False))
    c.update(changes)
    return c


def _run(tmp_path, monkeypatch, config, *, other_stops_at=None, sigterm_at=None, step_sleep=0.002):
    previous_handler = signal.getsignal(signal.SIGTERM)  # a stopped loop keeps its SIGTERM handler: put it back
    monkeypatch.setattr(loop, "_processes", lambda: 2)
    steps_seen = []
    gather = _Gather(steps_seen, other_stops_at)
    monkeypatch.setattr(loop.multihost_utils, "process_allgather", gather)
    fetched_at = []
    real_get = jax.device_get

    def device_get(x):
        fetched_at.append(len(steps_seen))
        return real_get(x)

    monkeypatch.setattr(loop.jax, "device_get", device_get)
    mesh = parallel.make_mesh()

    @jax.jit
    def train_step(state, batch, key):
        del key
        w = state["w"] + batch["x"].sum()
        return {"w": w}, {"loss": w, "finite": jnp.isfinite(w), "grad_norm": jnp.zeros(())}

    def stream(start):
        import time

        while True:
            steps_seen.append(1)
            if sigterm_at is not None and len(steps_seen) == sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(step_sleep)  # a step of a few ms, so the budget spans several steps
            n = len(jax.devices())
            yield {"x": np.ones((n,), np.float32), "mask": np.ones((n,), bool)}

    checkpoints = ckpt_lib.RunCheckpoints(str(tmp_path), max_to_keep=3)
    try:
        result = loop.run(config, str(tmp_path), state={"w": jnp.zeros(())}, mesh=mesh, train_step=train_step,
                          stream=stream, metrics_log=workdir_lib.MetricsLog(str(tmp_path), enabled=False),
                          checkpoints=checkpoints)
        saved = checkpoints.all_steps()
    finally:
        checkpoints.close()
        signal.signal(signal.SIGTERM, previous_handler)
    return result, gather.calls, fetched_at, saved


def test_schedule_intervals_come_from_the_slowest_pace_and_are_the_same_everywhere():
    a, b = loop.StopSchedule(0, 10.0, 2), loop.StopSchedule(0, 10.0, 2)
    assert a.due(1) and not a.every_step
    for s in (a, b):
        s.checked(1, 0.0)  # nothing measured yet: check again after the next step
    assert a.next == b.next == 2
    a.checked(2, 0.25)  # the slowest process took 0.25 s a step: 40 steps fit in 10 s
    assert a.next == 42 and not a.due(41) and a.due(42) and a.due(5, forced=True)
    a.checked(42, 1e-9)
    assert a.next == 42 + loop.StopSchedule.MAX_INTERVAL
    one = loop.StopSchedule(0, 10.0, 1)
    assert one.every_step and one.due(7)
    assert loop.StopSchedule(0, 0.0, 2).every_step  # stop_check_s=0: after every step, as before


def test_two_processes_gather_only_at_scheduled_checkpoint_and_last_steps(tmp_path, monkeypatch):
    result, calls, fetched_at, saved = _run(tmp_path, monkeypatch, _config())
    assert not result.stopped and result.step == STEPS
    steps = [s for s, _ in calls]
    assert steps[:2] == [1, 2], steps  # the first checks measure the pace
    assert 50 in steps and 100 in steps and steps[-1] == STEPS  # checkpoint steps and the last one
    assert len(steps) < STEPS // 4, steps  # not one per step
    assert all(isinstance(pace, float) and pace >= 0 for _, (flag, pace) in calls)
    assert set(fetched_at) <= {50, 100, STEPS}, fetched_at  # the only other host syncs: logging at the saves
    assert saved == [50, 100, STEPS]


def test_every_step_when_stop_check_s_is_zero(tmp_path, monkeypatch):
    _, calls, _, _ = _run(tmp_path, monkeypatch, _config(stop_check_s=0.0, num_train_steps=30, checkpoint_every=0))
    assert [s for s, _ in calls] == list(range(1, 31))


def test_another_process_stop_is_agreed_at_the_next_check_and_saved_here(tmp_path, monkeypatch):
    result, calls, _, saved = _run(tmp_path, monkeypatch, _config(checkpoint_every=0), other_stops_at=30)
    steps = [s for s, _ in calls]
    expected = min(s for s in steps if s >= 30)
    assert result.stopped and result.step == expected == steps[-1] and saved == [expected]
    assert result.signal_name == "a stop signal on another process"


@pytest.mark.parametrize("sigterm_at", [20])
def test_sigterm_here_is_acted_on_at_a_check_step_within_the_budget(tmp_path, monkeypatch, sigterm_at):
    result, calls, _, saved = _run(tmp_path, monkeypatch, _config(checkpoint_every=0, stop_check_s=0.05),
                                   sigterm_at=sigterm_at)
    steps = [s for s, _ in calls]
    assert result.stopped and result.signal_name == "SIGTERM" and result.step == steps[-1] >= sigterm_at
    assert calls[-1][1][0] == 1.0  # this process's flag went into the gather
    assert saved == [result.step]
    # the budget is 0.05 s and a step takes a few ms: the stop comes within a few dozen steps
    assert result.step - sigterm_at < 60, (result.step, steps)
