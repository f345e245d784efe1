"""The garbage collector's settings for a long-running CARS process.

CPython's cyclic collector stops the process while it walks every tracked object of the generations
it collects. A running platform holds a large, steady population: everything its imports made
(~160,000 objects: FastAPI, OpenTelemetry, FastStream, the contracts) and its bounded caches (the
envelopes just appended, aggregate histories, folded watches). With the default thresholds
(700, 10, 10) the full collections came every couple of seconds under ingest and took 180 ms on
average, up to 380 ms, with the event loop stopped: most of the latency figure's p99 (measured with
gc.callbacks during `bench/ingest.py --runs 300 --rate 100 --seconds 20`: 17 full collections,
3.5-4.4 s of collecting in ~45 s).

So, once the process has started:
- `gc.freeze()` moves what start-up made to the permanent generation, which no collection walks
  (those objects live as long as the process anyway; reference counting still frees any of them
  that is dropped, freezing only exempts them from the cycle search);
- higher thresholds make young collections rarer and full ones much rarer. Almost nothing CARS
  allocates is cyclic, so reference counting frees it and the collector finds little: the
  thresholds only bound how long the occasional cycle (an exception's traceback) lingers.
Together: 4 full collections instead of 17, ~1.0 s of collecting instead of 3.5-4.4 s, in the same
measurement.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 100)


def settle() -> None:
    """Collect what start-up left, freeze the survivors, and raise the thresholds (see above)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
