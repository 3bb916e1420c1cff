"""How a batch of robustness queries is cut into chunks, the unit of work a worker takes from the queue.

A chunk costs the same few milliseconds of queue and database work (a message, a claim, a store)
whatever it holds, so chunks must be large where queries are cheap; and the last chunks of a job must be
small, or one worker is still busy with a large chunk while the others have nothing left to take. Guided
self-scheduling (Polychronopoulos & Kuck, "Guided self-scheduling: a practical scheduling scheme for
parallel supercomputers", IEEE Trans. Computers 36(12), 1987) does both: every chunk takes a fixed share
of what is still unassigned, so the sizes shrink geometrically towards the end.

The largest chunk is sized from what the job's network has cost before: ``target_seconds`` of engine time
at the mean time per query of its recent certificates (for those methods); a network without history
gets :data:`FIRST_CHUNK` queries. The estimate only sizes work: it never touches an answer.
"""

from __future__ import annotations

import math

FIRST_CHUNK = 20  # the largest chunk of a network without history
LARGEST_CHUNK = 1000  # whatever the history says
SHARE = 2  # each chunk takes 1/SHARE of the queries still unassigned (GSS with two workers' worth)
SMALLEST_FRACTION = 8  # the smallest chunk is the largest / this


def largest_chunk(mean_query_seconds: float | None, target_seconds: float) -> int:
    """Queries in the largest chunk: ``target_seconds`` of engine time at the history's mean cost."""
    if mean_query_seconds is None or not math.isfinite(mean_query_seconds) or mean_query_seconds <= 0:
        return FIRST_CHUNK
    return max(1, min(LARGEST_CHUNK, int(target_seconds / mean_query_seconds)))


def guided_sizes(total: int, largest: int, smallest: int | None = None, share: int = SHARE) -> list[int]:
    """Chunk sizes for ``total`` queries: each takes ``ceil(remaining / share)``, within
    ``[smallest, largest]``, and a remainder smaller than ``smallest`` joins the chunk before it (unless
    that chunk would then be larger than the one before it). ``smallest`` defaults to
    ``largest // SMALLEST_FRACTION``, and to no more than a sixteenth of the batch. The sizes add up to
    ``total`` and never grow."""
    if total < 0 or largest < 1 or share < 1:
        raise ValueError(f"need total >= 0, largest >= 1, share >= 1; got {total}, {largest}, {share}")
    if smallest is None:
        smallest = min(largest // SMALLEST_FRACTION, math.ceil(total / 16))
    smallest = max(1, min(smallest, largest))
    sizes, remaining = [], total
    while remaining > 0:
        size = min(remaining, largest, max(smallest, math.ceil(remaining / share)))
        if remaining - size < smallest and remaining <= (sizes[-1] if sizes else largest):
            size = remaining  # no runt chunk at the end, unless taking it would make this one grow
        sizes.append(size)
        remaining -= size
    return sizes


def fixed_sizes(total: int, size: int) -> list[int]:
    """``total`` queries in chunks of ``size`` (the last one smaller)."""
    if size < 1:
        raise ValueError(f"a chunk holds at least one query, got {size}")
    return [min(size, total - start) for start in range(0, total, size)]
