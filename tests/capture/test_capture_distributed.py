"""torch.distributed: two CPU processes on gloo, one shard per rank, gathered on rank 0."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from latentlens.capture import load_activations

pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)

WORKER = textwrap.dedent(
    """
    import os
    import sys

    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    from latentlens.capture import ActivationRecorder, gather_activations, save_activations

    folder = sys.argv[1]
    dist.init_process_group("gloo", init_method="env://")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    ddp = DistributedDataParallel(model)
    recorder = ActivationRecorder(ddp, ["0", "2"])
    generator = torch.Generator().manual_seed(100 + rank)
    with recorder:
        for step in range(2):
            x = torch.randn(3 + rank, 4, generator=generator)
            labels = torch.arange(len(x)) + 100 * rank + 10 * step
            with recorder.record(labels=labels, step=step, split=f"rank{rank}"):
                ddp(x).sum().backward()
    recorder.save(folder + "/shards")
    gathered = gather_activations(recorder.all_activations())
    if rank == 0:
        save_activations(folder + "/gathered", gathered)
    else:
        assert gathered is None

    # FSDP (v1, one unit per Linear) and fully_shard (v2) on CPU, same seed and inputs.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    for kind in ("fsdp1", "fsdp2"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        if kind == "fsdp1":
            wrapped = FullyShardedDataParallel(
                model,
                device_id=torch.device("cpu"),
                auto_wrap_policy=ModuleWrapPolicy({nn.Linear}),
                use_orig_params=True,
            )
        else:
            mesh = init_device_mesh("cpu", (2,))
            fully_shard(model[0], mesh=mesh)
            wrapped = fully_shard(model, mesh=mesh)
        recorder = ActivationRecorder(wrapped, ["0", "2"])
        assert recorder.layer_names == ["0", "2"], recorder.layer_names
        generator = torch.Generator().manual_seed(100 + rank)
        with recorder:
            x = torch.randn(3 + rank, 4, generator=generator)
            with recorder.record(labels=torch.arange(len(x)), step=0):
                wrapped(x).sum().backward()
        recorder.save(folder + "/" + kind)
    dist.barrier()
    dist.destroy_process_group()
    # Every result is on disk now, so skip interpreter teardown. In torch 2.13 the gloo/FSDP
    # threads sometimes abort it ("terminate called without an active exception", SIGABRT),
    # which is unrelated to capture.
    sys.stdout.flush()
    os._exit(0)
    """
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_ddp_and_fsdp(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = _free_port()
    processes = []
    for rank in range(2):
        env = dict(
            os.environ,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE="2",
            GLOO_SOCKET_IFNAME="lo",
            OMP_NUM_THREADS="1",
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, str(script), str(tmp_path)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for process in processes:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    shards = load_activations(tmp_path / "shards")
    gathered = load_activations(tmp_path / "gathered")
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "manifest.json",
        "rank-00000",
        "rank-00001",
    ]
    for layer in ["0", "2"]:
        acts = shards[layer]
        assert acts.metadata["rank"].tolist() == [0] * 6 + [1] * 8
        for rank in range(2):
            generator = torch.Generator().manual_seed(100 + rank)
            inputs = torch.cat([torch.randn(3 + rank, 4, generator=generator) for _ in range(2)])
            expected = model[: int(layer) + 1](inputs).detach().numpy()
            rows = acts.metadata["rank"] == rank
            np.testing.assert_allclose(acts.values[rows], expected, atol=1e-6)
            labels = np.concatenate([np.arange(3 + rank) + 100 * rank + 10 * s for s in range(2)])
            np.testing.assert_array_equal(acts.metadata["label"][rows], labels)
            assert set(acts.metadata["split"][rows]) == {f"rank{rank}"}
        np.testing.assert_array_equal(gathered[layer].values, acts.values)
        np.testing.assert_array_equal(gathered[layer].metadata["rank"], acts.metadata["rank"])

    # Sharded models: the first batch of each rank, through the unsharded reference model.
    for kind in ("fsdp1", "fsdp2"):
        captured = load_activations(tmp_path / kind)
        for layer in ["0", "2"]:
            acts = captured[layer]
            assert acts.metadata["rank"].tolist() == [0] * 3 + [1] * 4
            for rank in range(2):
                generator = torch.Generator().manual_seed(100 + rank)
                inputs = torch.randn(3 + rank, 4, generator=generator)
                expected = model[: int(layer) + 1](inputs).detach().numpy()
                rows = acts.metadata["rank"] == rank
                np.testing.assert_allclose(acts.values[rows], expected, atol=1e-6)
