"""A long training run with capture on keeps memory flat."""

from __future__ import annotations

import gc
import os
import weakref

import pytest
import torch
from torch import nn

from latentlens.capture import ActivationRecorder, CaptureBudgetWarning

# Resident-set growth allowed between step 100 and step 1,000. The recorder holds at most
# BUDGET bytes, the model and optimizer state are allocated before step 100, so growth
# beyond a few MiB of allocator noise means something accumulates per step.
RSS_GROWTH_BOUND = 8 * 2**20
BUDGET = 256 * 2**10


def _rss_bytes() -> int:
    with open("/proc/self/statm") as stream:
        resident_pages = int(stream.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_thousand_training_steps_keep_memory_flat():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(inplace=True), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    recorder = ActivationRecorder(model, ["0", "2"], memory_budget=BUDGET)
    references: list[weakref.ref] = []
    watcher = model[0].register_forward_hook(lambda m, a, o: references.append(weakref.ref(o)))
    watcher_last = model[2].register_forward_hook(lambda m, a, o: references.append(weakref.ref(o)))
    generator = torch.Generator().manual_seed(0)
    rss_at_100 = None
    # One intra-op thread keeps this tiny model fast on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # Automatic garbage collection stays off, so reference cycles would show up as leaks.
    gc.collect()
    gc.disable()
    try:
        with recorder, pytest.warns(CaptureBudgetWarning):
            for step in range(1000):
                x = torch.randn(32, 32, generator=generator)
                y = torch.randint(0, 10, (32,), generator=generator)
                with recorder.record(labels=y, step=step, split="train"):
                    loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                del loss, x
                assert len(references) == 2
                assert all(reference() is None for reference in references), step
                references.clear()
                assert recorder.memory_bytes <= BUDGET
                if step == 100:
                    rss_at_100 = _rss_bytes()
        growth = _rss_bytes() - rss_at_100
    finally:
        gc.enable()
        torch.set_num_threads(threads)
        watcher.remove()
        watcher_last.remove()
    assert recorder.peak_memory_bytes <= BUDGET
    assert recorder.dropped_rows > 0
    assert growth < RSS_GROWTH_BOUND, f"RSS grew by {growth / 2**20:.1f} MiB"
    kept_steps = recorder.steps("0")
    assert kept_steps[-1] == 999
    assert kept_steps == list(range(kept_steps[0], 1000))
