"""Training progress for the driver's terminal, without the workers' logs.

The CLI keeps Ray's worker logs out of the terminal (they stay in Ray's log files), so rank 0 cannot print its
progress. It posts it instead to a small actor that the driver polls while Ray Train runs: the driver then draws
one progress bar however many workers there are and wherever they run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import ray


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest progress posted by rank 0: steps done and due, epoch, loss, images/s."""

    def __init__(self) -> None:
        self.state: dict = {}

    def post(self, state: dict) -> None:
        self.state = state

    def read(self) -> dict:
        return self.state


def run_with_progress(work: Callable[[], object], board, on_progress: Callable[[dict], None],
                      every_s: float = 0.5) -> object:
    """Run `work` in a thread and hand each new state of `board` to `on_progress` on this thread until it ends."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised below, on the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="ray-train-fit", daemon=True)
    thread.start()
    last = None
    while thread.is_alive():
        thread.join(every_s)
        try:
            state = ray.get(board.read.remote(), timeout=5)
        except ray.exceptions.RayError:  # a missed update is harmless; the next poll catches up
            continue
        if state and state != last:
            on_progress(state)
            last = state
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
