"""Training-step time with and without activation capture, on CPU.

Two models, each trained with Adam on fixed batches:

- a small BERT encoder built from a config (hidden 128, 2 layers, 4 heads, sequences of
  64 tokens with right padding of varying length, batch 16), capturing both encoder
  layers with the masked mean over real tokens;
- the demo's ``DigitsCNN`` on 8x8 digits (batch 64), capturing ``features`` (spatial
  mean of the (n, 32, 4, 4) map) and ``penultimate`` (n, 64).

Four variants run in every repeat, in a new random order each time, so that load from
other processes hits all of them alike and no variant always runs after the same one (a
rotation put the second no-capture run after the naive hook every time, and it read 1.7 %
slower than the first). The variants are: no hooks; ``ActivationRecorder``
with labels, capturing every step; as the anchor, a hand-written forward hook ("naive
hook" in the output) that keeps
``output.detach().float().cpu().clone()`` of the full output (what a plain hook cache in
the style of TransformerLens' ``run_with_cache`` stores); and no hooks again, a control
whose ratio to the first shows how far two identical runs differ. A repeat times
``--steps`` consecutive training steps per variant; a process reports medians over
repeats of the per-step wall time and of the per-step CPU time.

Memory layout moves these figures as much as capture does: the same code gave the CNN
1.018, 1.049 and 1.036 in three single-process runs in a row. Two measures keep that
apart from the capture's cost. Before each repeat of each variant a few allocations of
random size are made and kept while it runs, so the step's tensors land at different
heap addresses from repeat to repeat, drawn alike for every variant. And each model is
measured in ``--processes`` fresh processes. The summary is the median over processes of
each process's CPU-time ratio, with the lowest and highest, and the same for the CPU time
each variant adds per step: a rough guide to the overhead on a model with a longer step.

Run: python benchmarks/capture_overhead.py [--processes 9] [--repeats 11] [--steps 20]
[--threads 1] [--models bert,cnn]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn


def transformer_case(seed: int) -> tuple[nn.Module, list[str], Callable[[], torch.Tensor], dict]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=128,
    )
    encoder = BertModel(config, add_pooling_layer=False)
    head = nn.Linear(128, 4)
    generator = torch.Generator().manual_seed(seed)
    batch, tokens = 16, 64
    input_ids = torch.randint(1, 1000, (batch, tokens), generator=generator)
    lengths = torch.randint(8, tokens + 1, (batch,), generator=generator)
    attention_mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    labels = torch.randint(0, 4, (batch,), generator=generator)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> torch.Tensor:
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        loss = nn.functional.cross_entropy(head(hidden[:, 0]), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return encoder, ["encoder.layer.0", "encoder.layer.1"], step, {"labels": labels}


def cnn_case(seed: int) -> tuple[nn.Module, list[str], Callable[[], torch.Tensor], dict]:
    from latentlens.demo import DigitsCNN, load_digits_split

    torch.manual_seed(seed)
    model = DigitsCNN()
    split = load_digits_split(seed)
    images = torch.as_tensor(split.train_images[:64], dtype=torch.float32)
    labels = torch.as_tensor(split.train_labels[:64], dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return model, ["features", "penultimate"], step, {"labels": labels}


def time_steps(
    step: Callable[[], torch.Tensor], steps: int, around: Callable
) -> tuple[float, float]:
    """Wall and process CPU seconds per step over ``steps`` steps, each inside ``around()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(steps):
        with around(index):
            step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def measure(case: Callable, repeats: int, steps: int, seed: int) -> dict[str, tuple[float, float]]:
    import contextlib

    from latentlens.capture import ActivationRecorder

    model, layers, step, record_kwargs = case(0)
    recorder = ActivationRecorder(model, layers)
    naive_store: list[torch.Tensor] = []
    modules = dict(model.named_modules())

    def naive_hook(module, args, output):
        naive_store.append(output.detach().float().cpu().clone())

    def plain(_index):
        return contextlib.nullcontext()

    step_counter = iter(range(10**9))

    def with_recorder(_index):
        return recorder.record(step=next(step_counter), **record_kwargs)

    def run_plain() -> tuple[float, float]:
        return time_steps(step, steps, plain)

    def run_recorder() -> tuple[float, float]:
        with recorder:
            seconds = time_steps(step, steps, with_recorder)
        recorder.clear()
        return seconds

    def run_naive() -> tuple[float, float]:
        handles = [modules[name].register_forward_hook(naive_hook) for name in layers]
        try:
            return time_steps(step, steps, plain)
        finally:
            for handle in handles:
                handle.remove()
            naive_store.clear()

    variants = {
        "plain": run_plain,
        "latentlens": run_recorder,
        "naive hook": run_naive,
        "no capture again": run_plain,
    }
    for run in variants.values():
        run()  # warm-up: allocator, autograd caches, first recorder buffers
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    names = list(variants)
    layout = random.Random(seed)
    for _ in range(repeats):
        layout.shuffle(names)
        for name in names:
            # Kept while the variant runs, so its tensors start at a new heap address.
            padding = [
                torch.empty(layout.randrange(1, 1 << 16)) for _ in range(layout.randrange(1, 8))
            ]
            samples[name].append(variants[name]())
            del padding
    return {
        name: (
            statistics.median(wall for wall, _ in values),
            statistics.median(cpu for _, cpu in values),
        )
        for name, values in samples.items()
    }


CASES = {
    "bert": ("BERT 2x128, seq 64, b 16", transformer_case),
    "cnn": ("DigitsCNN, batch 64", cnn_case),
}


def run_child(case: str, args: argparse.Namespace, seed: int) -> dict[str, list[float]]:
    """Measure ``case`` in a fresh process and return its medians per variant."""
    command = [
        sys.executable,
        __file__,
        "--child",
        case,
        "--seed",
        str(seed),
        "--repeats",
        str(args.repeats),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"the {case} measurement failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keep the docstring's paragraphs in --help and show each option's default."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\nRun:")[0],
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--processes", type=int, default=9, help="Fresh processes per model (at least 1)."
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=11,
        help="Repeats per variant and process, in a new random variant order each time. The "
        "process reports the median over them.",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=20,
        help="Consecutive training steps timed per repeat, which gives one per-step time.",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads per process."
    )
    parser.add_argument(
        "--models", default="bert,cnn", help="Comma-separated models to measure: bert, cnn."
    )
    parser.add_argument("--child", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes < 1:
        parser.error(f"--processes must be at least 1, got {args.processes}")
    models = args.models.split(",")
    unknown = sorted(set(models) - set(CASES))
    if unknown:
        parser.error(f"--models has unknown names {unknown}; use bert, cnn or both")
    if args.child:
        torch.set_num_threads(args.threads)
        medians = measure(CASES[args.child][1], args.repeats, args.steps, args.seed)
        print(json.dumps(medians))
        return

    print(
        f"torch {torch.__version__}, {args.threads} thread(s), {args.processes} processes x "
        f"{args.repeats} interleaved repeats x {args.steps} steps; per process the median "
        "per-step time in ms (wall clock, and CPU time of the process, which other "
        "processes' load disturbs less).\n'run' is the process; each 'ratio' divides the "
        "time before it by the 'no capture' time; 'again' is a second run without capture, "
        "so its ratio shows the noise. 'latentlens' is ActivationRecorder capturing two layers "
        "with labels; 'naive hook' is a forward hook that keeps a CPU copy of each whole output."
    )
    print(
        f"{'model':<26}{'run':>5}{'clock':>6}{'no capture':>12}{'latentlens':>12}{'ratio':>8}"
        f"{'naive hook':>12}{'ratio':>8}{'again':>12}{'ratio':>8}"
    )
    compared = ("latentlens", "naive hook", "no capture again")
    summary = []
    for case in models:
        label = CASES[case][0]
        ratios: dict[str, list[float]] = {name: [] for name in compared}
        added: dict[str, list[float]] = {name: [] for name in compared}
        for run in range(1, args.processes + 1):
            medians = run_child(case, args, seed=run)
            for index, clock in enumerate(("wall", "cpu")):
                plain = medians["plain"][index]
                cells = "".join(
                    f"{medians[name][index] * 1e3:>12.3f}{medians[name][index] / plain:>8.3f}"
                    for name in compared
                )
                print(f"{label:<26}{run:>5}{clock:>6}{plain * 1e3:>12.3f}{cells}", flush=True)
            for name in compared:
                ratios[name].append(medians[name][1] / medians["plain"][1])
                added[name].append((medians[name][1] - medians["plain"][1]) * 1e6)
        summary.append((label, ratios, added))

    ratio_title = (
        "CPU-time ratio to no capture, median over processes (min to max); "
        '"no capture again" is the second run without capture, the noise floor:'
    )
    print_summary(ratio_title, [(label, ratios) for label, ratios, _ in summary], "{:.3f}")
    added_title = (
        "CPU time added per step in microseconds, median over processes (min to max); "
        "divide by your own step time to estimate the overhead there:"
    )
    print_summary(added_title, [(label, added) for label, _, added in summary], "{:.0f}")


def print_summary(title: str, rows: list[tuple[str, dict[str, list[float]]]], number: str) -> None:
    """Print ``title``, then per model each variant's median, min and max in ``number`` format."""
    print("\n" + title)
    for label, by_variant in rows:
        parts = [
            f"{name} {number.format(statistics.median(values))} "
            f"({number.format(min(values))} to {number.format(max(values))})"
            for name, values in by_variant.items()
        ]
        print(f"{label:<26}" + ", ".join(parts))


if __name__ == "__main__":
    main()
