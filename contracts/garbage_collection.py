"""The garbage collector of a long-running service: what it loaded before it started serving is
left out of every later collection.

A full (generation 2) collection walks every object the process tracks: the modules, routes,
schemas and statements it loaded, a couple of hundred thousand objects that live as long as the
process. Under `make bench` each full collection stopped a service's event loop for 40-140 ms,
and every request or message in hand waited that long. Frozen, those objects are never walked
again: a full collection walks only what the service made since, and takes a few milliseconds.
"""

import gc


def freeze_startup_heap() -> None:
    """Collect the garbage of loading, then freeze what is left. Called by each service's entry
    point once its application is built (not by the factories: a test process builds many)."""
    gc.collect()
    gc.freeze()
