"""Stop at a step boundary when the machine is about to be taken away (TPU preemption: SIGTERM).

A TPU VM that is preempted, or a spot slice that is reclaimed, gets SIGTERM and about 30 seconds before it is stopped
(Cloud TPU documentation, "Preemptible / Spot TPUs"). Dying mid-step would lose everything since the last periodic
checkpoint, so the handler only records the request; the step driver (embed_jax/train/driver.py) asks
`should_stop(step)` after every step and, when it says yes, saves a checkpoint with `force=True` and raises
`driver.Preempted`, which the entry point turns into exit status 128 + the signal's number (143 for SIGTERM, 130 for
Ctrl-C's SIGINT: what a shell reports for a process the signal ended, so a scheduler that requeues a preempted job
tells it from a finished one, exit 0; docs/training.md). Ctrl-C is handled like SIGTERM; a second Ctrl-C interrupts
at once.

Guards nest: the training loop holds one across all stages (a signal while a stage is being set up, or between
stages, is kept and acted on at the next step boundary or stage boundary), and the driver holds one per stage; the
inner guard sees a request the outer one received, and passes its own on to it.

With several processes every one of them must stop at the same step, or the collective save hangs. Two ways:

- jax's preemption service (on by default when `jax.distributed.initialize` runs): its own SIGTERM handler tells the
  coordination service, which picks a step every process will reach; `reached_preemption_sync_point(step)` says
  True on all processes at that step. The guard then installs no handler of its own, which would replace jax's.
- otherwise, a process-agreed flag: every `should_stop` all-gathers each process's flag, so one host's SIGTERM stops
  all of them at the same step.

Usage (what `driver.run_steps` does)::

    with PreemptionGuard() as guard:
        for step in range(start, total + 1):
            state = train_step(state, next(batches))
            if guard.should_stop(step):
                checkpoints.save(step, state, iterator, force=True)
                raise Preempted(step)
            checkpoints.save(step, state, iterator)
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

# What a scheduler or a person sends to stop a run: TPU preemption and `kill` send SIGTERM, Ctrl-C sends SIGINT.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: signal.Signals | None) -> int:
    """128 + the signal's number, as a shell reports a process that signal ended (SIGTERM 143, SIGINT 130)."""
    return 128 + int(signum if signum is not None else signal.SIGTERM)


def jax_preemption_service_running() -> bool:
    """Whether jax.distributed runs the preemption sync manager (its SIGTERM handler is installed)."""
    from jax._src import distributed  # the only place jax exposes the sync manager; read-only use

    state = distributed.global_state
    return state.client is not None and state.preemption_sync_manager is not None


class PreemptionGuard:
    """Turns a termination signal into a `should_stop(step)` that every process answers alike at a step boundary.

    `signals`: which signals mean "about to be stopped" (SIGTERM is what TPU preemption sends, SIGINT is Ctrl-C).
    The previous handlers come back on `close()` / leaving the `with` block.
    """

    def __init__(self, signals: Sequence[signal.Signals] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self._requested = threading.Event()
        self._received: signal.Signals | None = None
        self._previous_handlers: dict[signal.Signals, object] = {}
        self._outer: PreemptionGuard | None = None
        self.uses_jax_sync = jax.process_count() > 1 and jax_preemption_service_running()
        if not self.uses_jax_sync:
            self._install()

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "PreemptionGuard must be created in the main thread: Python only delivers signals there. Create it "
                "in the training entry point, before starting the loop."
            )
        for signum in self.signals:
            previous = signal.signal(signum, self._on_signal)
            self._previous_handlers[signum] = previous
            if isinstance(getattr(previous, "__self__", None), PreemptionGuard):
                self._outer = previous.__self__

    def _on_signal(self, signum: int, frame) -> None:
        del frame
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the save
        self._record(signal.Signals(signum))
        # os.write, not print/logging: a signal handler may interrupt code that holds their locks.
        message = f"\n{self._received.name} received: saving a checkpoint at the next step boundary, then exiting.\n"
        os.write(2, message.encode())

    def _record(self, signum: signal.Signals) -> None:
        self._received = signum
        self._requested.set()
        if self._outer is not None:
            self._outer._record(signum)

    @property
    def requested(self) -> bool:
        """Whether this process received one of the signals (its own view, before processes agree)."""
        return self._requested.is_set() or (self._outer is not None and self._outer.requested)

    @property
    def received_signal(self) -> signal.Signals | None:
        if self._received is None and self._outer is not None:
            return self._outer.received_signal
        return self._received

    def request_stop(self) -> None:
        """Asks for a stop as a signal would (for a time budget, or a test)."""
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        """True when the loop must save and stop after `step`; call it on every process after every step."""
        if self.uses_jax_sync:
            return multihost_utils.reached_preemption_sync_point(step)
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray(self.requested, dtype=np.int32))
        return bool(np.any(flags))

    def stop_between_stages(self) -> bool:
        """At a stage boundary: whether any process asked to stop. Every process calls it at the same point. Under
        jax's preemption service the request waits for the next stage's first step boundary (its sync point)."""
        if self.uses_jax_sync:
            return False
        if jax.process_count() == 1:
            return self.requested
        flags = multihost_utils.process_allgather(np.asarray(self.requested, dtype=np.int32))
        return bool(np.any(flags))

    def close(self) -> None:
        """Puts the previous signal handlers back."""
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def __enter__(self) -> PreemptionGuard:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
