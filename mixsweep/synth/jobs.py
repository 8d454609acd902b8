"""Running the render jobs. Each image draws from its own seeded stream, so the jobs give the same bytes
in this process or in a process pool."""

from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np


def stream_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The random stream of one item. Streams in use, kept apart so no two draws share numbers: 0 COCO ids
    and kinds, 1 and 2 the train and val scenes, 3 pet photos, 4 pet file encodings, 5 the pet split and
    head boxes, 6 stray files, 7 the null world's coin."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(stream), int(index)]))


def run_jobs(fn: Callable, jobs: list, pool: ProcessPoolExecutor | None, label: str, progress: bool) -> list:
    """fn over jobs, results in job order, in the pool when there is one."""
    out = []
    it = pool.map(fn, jobs, chunksize=8) if pool is not None else map(fn, jobs)
    step = max(1, len(jobs) // 10)
    for i, r in enumerate(it, 1):
        out.append(r)
        if progress and (i % step == 0 or i == len(jobs)):
            print(f"synth: {label} {i}/{len(jobs)}", file=sys.stderr, flush=True)
    return out


def open_pool(n_jobs: int) -> ProcessPoolExecutor | None:
    """A process pool for a large set; None runs the jobs in this process."""
    workers = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    if n_jobs > 600 and workers > 1:
        # spawn, not fork: callers may hold threads (torch, Ray) that fork would copy mid-lock.
        return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    return None
