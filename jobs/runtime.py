"""Starting Ray: a local instance by default, a cluster when an address is given (flag or RAY_ADDRESS)."""

from __future__ import annotations

import logging
import os


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True) -> None:
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # the dashboard stays on: Ray Train's placement-group cleaner polls the state API it serves
    kwargs = {"logging_level": logging.WARNING if quiet else logging.INFO}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus, **kwargs)
    if quiet:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = True
        DataContext.get_current().print_on_execution_start = False
