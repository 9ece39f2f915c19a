"""The training loop, shared by classification training and OmniVec pretraining.

`run(...)` resumes from the workdir's newest complete checkpoint, feeds the step function one
global batch per step (the data position is a function of the step, so the stream starts at the
checkpoint), logs the mean of the step statistics every `log_every` steps, checkpoints every
`checkpoint_every` steps and at the end, and stops cleanly on SIGTERM (a preemption notice) or
SIGINT (Ctrl-C): it saves the step it is at and says how to resume; the command then exits with
status 75 (`RunStopped`). A second Ctrl-C while it saves quits at once (the last complete
checkpoint stays; Orbax never leaves a half-written one that looks complete).

Stopping is decided the same way on every process: each process turns the signal into a local
flag, and at agreed steps (stop checks) the processes all-gather their flags; if any is set, all
of them save the same step and stop. (A flag acted on by one process alone would make it leave
the collective save or the next step while the others wait for it.) An all-gather blocks the host
until the steps before it have run, so with several processes it is not done after every step:
each check also gathers every process's seconds per step since the previous check, and the next
check comes after as many steps as fit in `config.stop_check_s` seconds on the slowest process
(`StopSchedule`), and at every checkpoint step and the last one. All processes compute the same
interval from the same gathered numbers, so they check at the same steps. A stop therefore
takes effect within about `stop_check_s` seconds (plus the save): keep it well below the
scheduler's grace period. A single process reads its own flag after every step (no sync);
`stop_check_s=0` checks after every step everywhere (the behaviour before the schedule).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from fer_jax import checkpoint as ckpt_lib
from fer_jax import parallel, paths, workdir as workdir_lib
from fer_jax.errors import CheckpointMismatchError, NonFiniteLossError

log = logging.getLogger(__name__)


def _processes() -> int:
    return jax.process_count()


class Preemption:
    """SIGTERM or SIGINT -> a flag; `agreed()` is True on every process as soon as any process got one.

    A second SIGINT raises KeyboardInterrupt at once (the user insists: quit without saving).
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = False  # this process got SIGTERM or SIGINT
        self.stopped = False  # the processes agreed to stop
        self.signal_name = ""
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler, never preempted
                pass
        return self

    def _handle(self, signum, frame):
        del frame
        if signum == signal.SIGINT and self.requested and self.signal_name == "Ctrl-C":
            raise KeyboardInterrupt  # the second Ctrl-C: quit now
        self.requested = True
        self.signal_name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        if signum == signal.SIGINT:
            print("\nCtrl-C: saving a checkpoint at the end of this step (Ctrl-C again to quit at once) ...",
                  file=sys.stderr, flush=True)

    def agreed(self, seconds_per_step: float = 0.0) -> tuple[bool, float]:
        """Called by every process at the same step: (the OR of every process's flag, the largest
        seconds_per_step any process passed); a single process gathers nothing."""
        if _processes() == 1:
            self.stopped = self.requested
            return self.stopped, seconds_per_step
        gathered = np.asarray(multihost_utils.process_allgather(
            np.asarray([float(self.requested), float(seconds_per_step)], np.float64))).reshape(-1, 2)
        self.stopped = bool(gathered[:, 0].any())
        return self.stopped, float(gathered[:, 1].max())

    def __exit__(self, *exc):
        # After a stop, the SIGTERM handler stays: a scheduler's second SIGTERM (or one that reaches this host
        # after another host's stop was agreed) must not kill the process while it saves and exits.
        for sig, previous in self._previous.items():
            if previous is not None and (sig == signal.SIGINT or not (self.requested or self.stopped)):
                signal.signal(sig, previous)


class StopSchedule:
    """At which steps the processes agree on stopping: every step for one process; with several, the
    steps that fit in `budget_s` seconds at the slowest process's pace, and every forced step.

    `due(step)`: is `step` a check (the caller passes `forced` for checkpoint and last steps).
    `checked(step, slowest_s_per_step)`: after a check, with the gathered pace; sets the next one.
    The interval is a function of gathered numbers only, so every process gets the same steps.
    """

    MAX_INTERVAL = 10_000

    def __init__(self, start: int, budget_s: float, processes: int):
        self.every_step = processes == 1 or budget_s <= 0
        self.budget_s = float(budget_s)
        self.next = start + 1  # the first check after the first step (it measures nothing yet)
        self._last_step, self._last_time = start, None

    def due(self, step: int, forced: bool = False) -> bool:
        return self.every_step or forced or step >= self.next

    def pace(self, step: int) -> float:
        """This process's seconds per step since the previous check (0 before the first)."""
        now = time.perf_counter()
        seconds = 0.0 if self._last_time is None else (now - self._last_time) / max(step - self._last_step, 1)
        self._last_step, self._last_time = step, now
        return seconds

    def checked(self, step: int, slowest_s_per_step: float) -> None:
        if slowest_s_per_step <= 0:
            interval = 1
        else:
            interval = int(min(max(self.budget_s / slowest_s_per_step, 1), self.MAX_INTERVAL))
        self.next = step + interval


@contextlib.contextmanager
def _saves_finished(checkpoints):
    """On the way out of the loop (done, stopped, or an error such as a non-finite loss), a checkpoint save
    still in flight is finished first; not after a second Ctrl-C, which quits at once (the last complete
    checkpoint stays: an unfinished one is never taken as complete)."""
    try:
        yield
    except KeyboardInterrupt:
        raise
    except BaseException:
        checkpoints.wait()
        raise
    checkpoints.wait()


def stopped_message(result: dict, workdir: str, what: str = "the run") -> str:
    """The one line a stopped run ends with: where it stopped, that it saved, how to resume."""
    return (f"{what} was stopped by {result.get('signal') or 'a signal'} at step {result['step']}; its checkpoint is "
            f"saved in {paths.join(workdir, 'checkpoints')}. Rerun the same command to resume.")


@dataclasses.dataclass
class LoopResult:
    state: Any
    step: int  # the last step trained (== num_train_steps unless stopped)
    stopped: bool  # True when SIGTERM or Ctrl-C stopped the run (a checkpoint of `step` was saved)
    seconds: float
    signal_name: str = ""  # 'SIGTERM' or 'Ctrl-C' when stopped


def run(config, workdir: str, *, state, mesh, train_step: Callable, stream: Callable[[int], Iterator[dict]],
        metrics_log: workdir_lib.MetricsLog, checkpoints: ckpt_lib.RunCheckpoints, split: str = "train",
        nonfinite_advice: str = "Lower config.optimizer.lr and rerun in a new --workdir.",
        skip_nonfinite: bool = False, every_step: Callable[[int, Any], None] | None = None,
        postfix: tuple[str, ...] = ("loss",), initialised: bool = True) -> LoopResult:
    """Trains `state` from the newest checkpoint in `checkpoints` to config.num_train_steps.

    train_step(state, global batch, key) -> (state, stats), stats a dict of scalars with 'loss'
    and 'finite'; key = fold_in(key(config.seed), step). stream(start_step) -> iterator over
    this process's batches from that step on. Each logged line (split `split`) is the mean of the
    stats since the last one; a non-finite step raises NonFiniteLossError (keeping the last good
    checkpoint) unless skip_nonfinite, which counts `skipped_batches` instead. every_step(step,
    state) runs after each step (e.g. a periodic evaluation). initialised=False: `state` was built
    without its pretrained weights because a checkpoint was there to restore (one that turns out
    unreadable, and every one before it, is then an error: the rerun starts from the weights).
    """
    start = 0
    if checkpoints.latest_step():
        found = checkpoints.restore_latest(ckpt_lib.abstract_like(state, parallel.replicated(mesh)))
        if found is not None:
            start, state = found
            log.info("resumed from checkpoint at step %d in %s", start, checkpoints.directory)
    if not start and not initialised:
        raise CheckpointMismatchError(
            f"no checkpoint in {checkpoints.directory} could be read (each was moved aside, see the warnings), and "
            "this run was set up to resume without loading its pretrained weights. Rerun the same command: it "
            "starts from the pretrained weights.")
    metrics_log.drop_after(start)
    batches = stream(start)
    total, log_every = int(config.num_train_steps), int(config.log_every)
    ckpt_every = int(config.get("checkpoint_every", 0) or 0)
    base_key = jax.random.key(int(config.seed))
    pending: list[tuple[int, dict]] = []
    bar = None
    if metrics_log.enabled and config.get("progress_bar", True):
        bar = tqdm(total=total, initial=start, desc=split, unit="step", dynamic_ncols=True)

    def flush(step):
        """Fetches pending step stats (one host sync), checks them, logs their mean."""
        if not pending:
            return
        fetched = jax.device_get([s for _, s in pending])
        for (s, _), values in zip(pending, fetched):
            if not values["finite"] and not skip_nonfinite:
                raise NonFiniteLossError(
                    f"step {s}: the loss or its gradients are not finite (loss={float(values['loss'])}, "
                    f"grad_norm={float(values['grad_norm'])}). The last good checkpoint (step "
                    f"{checkpoints.latest_step()}) is kept in {checkpoints.directory}. {nonfinite_advice}")
        mean = {k: float(np.mean([v[k] for v in fetched])) for k in fetched[0] if k != "finite"}
        if skip_nonfinite:
            mean["skipped_batches"] = float(sum(not v["finite"] for v in fetched))
        metrics_log.write(step, split, mean)
        if bar is not None:
            bar.set_postfix({k: f"{mean[k]:.3f}" for k in postfix if k in mean})
        pending.clear()

    def save(step):
        if checkpoints.latest_step() != step:  # e.g. SIGTERM right after a scheduled save
            checkpoints.save(step, state)

    step, stopped, t0 = start, False, time.time()
    schedule = StopSchedule(start, float(config.get("stop_check_s", 0) or 0), _processes())
    with Preemption() as preemption, _saves_finished(checkpoints):
        while step < total:
            batch = parallel.global_batch(next(batches), mesh)
            state, stats = train_step(state, batch, jax.random.fold_in(base_key, step))
            step += 1
            pending.append((step, stats))
            if bar is not None:
                bar.update(1)
            if step % log_every == 0 or step == total:
                flush(step)
            if every_step is not None:
                every_step(step, state)
            scheduled_save = bool(ckpt_every and step % ckpt_every == 0) or step == total
            if schedule.due(step, forced=scheduled_save):
                stopped, slowest = preemption.agreed(schedule.pace(step))
                schedule.checked(step, slowest)
            if scheduled_save or stopped:
                flush(step)
                save(step)
            if stopped:
                break
        signal_name = preemption.signal_name or "a stop signal on another process"
    if bar is not None:
        bar.close()
    return LoopResult(state=state, step=step, stopped=stopped, seconds=time.time() - t0,
                      signal_name=signal_name if stopped else "")
