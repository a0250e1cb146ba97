"""Several writers, resumed runs, crashes and torch's SummaryWriter on one run."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

import latentlens.export.writer as writer_module
from latentlens.export import ProjectorWriter, read_projector


def config_names(run_dir) -> list[str]:
    config = ProjectorConfig()
    text_format.Parse((run_dir / "projector_config.pbtxt").read_text(), config)
    return [e.tensor_name for e in config.embeddings]


def served(tmp_path, run) -> dict:
    result = read_projector(tmp_path, summaries=False)
    assert result["errors"] == []
    return result["embeddings"][run]


def test_two_writers_share_one_run(tmp_path, rng):
    data = {key: rng.normal(size=(12, 4)).astype(np.float32) for key in range(4)}
    first = ProjectorWriter(tmp_path, run="shared")
    second = ProjectorWriter(tmp_path, run="shared")
    first.add_embedding(data[0], layer="fc1", step=0)
    second.add_embedding(data[1], layer="fc2", step=0)
    first.add_embedding(data[2], layer="fc1", step=1)
    second.add_embedding(data[3], layer="fc1", step=1)  # same name: replaces first's step 1
    first.close()
    second.close()

    names = config_names(tmp_path / "shared")
    assert sorted(names) == ["fc1_step000000", "fc1_step000001", "fc2_step000000"]
    assert len(names) == len(set(names))
    entries = served(tmp_path, "shared")
    assert sorted(entries) == sorted(names)
    np.testing.assert_array_equal(entries["fc1_step000000"]["tensor"], data[0])
    np.testing.assert_array_equal(entries["fc2_step000000"]["tensor"], data[1])
    np.testing.assert_array_equal(entries["fc1_step000001"]["tensor"], data[3])
    # The replaced version's files are gone; one version folder per name remains.
    for name in names:
        assert len(list((tmp_path / "shared" / "projector" / name).iterdir())) == 1


def test_resumed_run_adds_and_replaces_without_duplicates(tmp_path, rng):
    old = {step: rng.normal(size=(10, 3)) for step in range(3)}
    with ProjectorWriter(tmp_path, run="r") as writer:
        for step, values in old.items():
            writer.add_embedding(values, layer="l", step=step, metadata={"label": ["old"] * 10})
    new_step_2 = rng.normal(size=(7, 3))  # a different point count for the same name
    with ProjectorWriter(tmp_path, run="r") as writer:
        writer.add_embedding(new_step_2, layer="l", step=2, metadata={"label": ["new"] * 7})
        writer.add_embedding(old[0], layer="l", step=3)

    names = config_names(tmp_path / "r")
    assert names == ["l_step000000", "l_step000001", "l_step000002", "l_step000003"]
    entries = served(tmp_path, "r")
    assert entries["l_step000002"]["shape"] == (7, 3)
    np.testing.assert_allclose(entries["l_step000002"]["tensor"], new_step_2.astype(np.float32))
    assert {row[0] for row in entries["l_step000002"]["metadata_rows"]} == {"new"}
    assert len(entries["l_step000002"]["metadata_rows"]) == 7
    np.testing.assert_allclose(entries["l_step000001"]["tensor"], old[1].astype(np.float32))


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("fail_on", ["metadata.tsv", "bookmarks.json", "embedding.pbtxt"])
def test_crash_between_files_keeps_run_loadable(tmp_path, rng, monkeypatch, fail_on):
    first = rng.normal(size=(9, 3))
    writer = ProjectorWriter(tmp_path, run="crash")
    writer.add_embedding(first, layer="l", step=0, metadata={"label": list("abcabcabc")})

    real_write = writer_module.atomic_write_text

    def failing_write(path, text, **kwargs):
        if path.name == fail_on:
            raise Boom(f"stopped before {fail_on}")
        return real_write(path, text, **kwargs)

    monkeypatch.setattr(writer_module, "atomic_write_text", failing_write)
    with pytest.raises(Boom):
        writer.add_embedding(
            rng.normal(size=(5, 3)), layer="l", step=1, metadata={"label": list("vwxyz")},
            layout=rng.normal(size=(5, 2)),
        )  # fmt: skip
    # The process "dies" here: no close. The run still loads, with the finished embedding.
    entries = served(tmp_path, "crash")
    assert sorted(entries) == ["l_step000000"]
    np.testing.assert_allclose(entries["l_step000000"]["tensor"], first.astype(np.float32))
    assert len(entries["l_step000000"]["metadata_rows"]) == 9
    assert not list((tmp_path / "crash").rglob("*.tmp"))

    # A resumed run exports the lost step; the unfinished folder is never referenced.
    monkeypatch.setattr(writer_module, "atomic_write_text", real_write)
    with ProjectorWriter(tmp_path, run="crash") as resumed:
        resumed.add_embedding(rng.normal(size=(5, 3)), layer="l", step=1)
    assert sorted(served(tmp_path, "crash")) == ["l_step000000", "l_step000001"]


def test_crash_in_config_write_keeps_old_config(tmp_path, rng, monkeypatch):
    with ProjectorWriter(tmp_path, run="c") as writer:
        writer.add_embedding(rng.normal(size=(4, 3)), layer="l", step=0)
    before = (tmp_path / "c" / "projector_config.pbtxt").read_bytes()

    real_replace = os.replace

    def failing_replace(source, destination):
        if str(destination).endswith("projector_config.pbtxt"):
            raise Boom("killed during rename")
        return real_replace(source, destination)

    monkeypatch.setattr("latentlens.export._files.os.replace", failing_replace)
    writer = ProjectorWriter(tmp_path, run="c")
    with pytest.raises(Boom):
        writer.add_embedding(rng.normal(size=(4, 3)), layer="l", step=1)
    monkeypatch.undo()
    assert (tmp_path / "c" / "projector_config.pbtxt").read_bytes() == before
    assert not list((tmp_path / "c").glob(".projector_config.pbtxt.*.tmp"))
    assert sorted(served(tmp_path, "c")) == ["l_step000000"]

    # Step 1's files were all written before the config failed, so the next merge
    # (here at close) lists it.
    writer.close()
    assert sorted(served(tmp_path, "c")) == ["l_step000000", "l_step000001"]


def test_sharing_a_run_with_torch_summary_writer(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    run_dir = tmp_path / "mixed"
    torch_writer = SummaryWriter(log_dir=str(run_dir))
    torch_writer.add_embedding(torch.randn(8, 4), metadata=list("abcdefgh"), tag="torch_a",
                               global_step=0)  # fmt: skip
    torch_writer.add_scalar("torch/loss", 1.5, 0)

    ours = ProjectorWriter(tmp_path, run="mixed")
    mine = rng.normal(size=(6, 5)).astype(np.float32)
    ours.add_embedding(mine, layer="fc1", step=0, metadata={"label": list("uvwxyz")})
    ours.add_scalar("drift/fc1/p_value", 0.25, step=0)
    assert sorted(config_names(run_dir)) == ["fc1_step000000", "torch_a:00000"]

    # torch rewrites the config from its own memory, dropping our entry ...
    torch_writer.add_embedding(torch.randn(8, 4), tag="torch_b", global_step=1)
    torch_writer.close()
    assert "fc1_step000000" not in config_names(run_dir)
    # ... and our next write (or close) puts it back, keeping both of torch's.
    ours.close()
    names = config_names(run_dir)
    assert sorted(names) == ["fc1_step000000", "torch_a:00000", "torch_b:00001"]

    result = read_projector(tmp_path)
    assert result["errors"] == []
    entries = result["embeddings"]["mixed"]
    np.testing.assert_array_equal(entries["fc1_step000000"]["tensor"], mine)
    assert entries["torch_a:00000"]["shape"] == (8, 4)
    assert [row[0] for row in entries["torch_a:00000"]["metadata_rows"]] == list("abcdefgh")
    assert result["scalars"]["mixed"]["torch/loss"] == [(0, 1.5)]
    assert result["scalars"]["mixed"]["drift/fc1/p_value"] == [(0, pytest.approx(0.25))]


def test_unreadable_config_is_rebuilt_from_our_files(tmp_path, rng):
    with ProjectorWriter(tmp_path, run="u") as writer:
        writer.add_embedding(rng.normal(size=(4, 3)), layer="l", step=0)
    (tmp_path / "u" / "projector_config.pbtxt").write_text("this is { not a config")
    with ProjectorWriter(tmp_path, run="u") as writer:
        writer.add_embedding(rng.normal(size=(4, 3)), layer="l", step=1)
    assert sorted(served(tmp_path, "u")) == ["l_step000000", "l_step000001"]


WRITER_SCRIPT = """
import sys
import numpy as np
from latentlens.export import ProjectorWriter

logdir, layer = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(abs(hash(layer)) % 1000)
with ProjectorWriter(logdir, run="together") as writer:
    for step in range(5):
        writer.add_embedding(rng.normal(size=(6, 3)), layer=layer, step=step)
"""


def test_two_processes_writing_at_once(tmp_path):
    processes = [
        subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(tmp_path), layer])
        for layer in ("left", "right")
    ]
    for process in processes:
        assert process.wait(timeout=120) == 0
    names = config_names(tmp_path / "together")
    expected = [f"{layer}_step{step:06d}" for layer in ("left", "right") for step in range(5)]
    assert sorted(names) == expected
    assert sorted(served(tmp_path, "together")) == expected


def test_foreign_duplicates_are_merged_once(tmp_path, rng):
    run = tmp_path / "dup"
    with ProjectorWriter(tmp_path, run="dup") as writer:
        writer.add_embedding(rng.normal(size=(4, 3)), layer="l", step=0)
    # Another tool appended a copy of its own entry twice (tensorboardX opens the
    # config in append mode) and a copy of ours.
    (run / "foreign.tsv").write_text("1\t2\n3\t4\n")
    config = ProjectorConfig()
    text_format.Parse((run / "projector_config.pbtxt").read_text(), config)
    ours = config.embeddings[0]
    for _ in range(2):
        config.embeddings.add(tensor_name="foreign", tensor_path="foreign.tsv")
    config.embeddings.add().CopyFrom(ours)
    (run / "projector_config.pbtxt").write_text(text_format.MessageToString(config))

    with ProjectorWriter(tmp_path, run="dup") as writer:
        writer.add_embedding(rng.normal(size=(4, 3)), layer="l", step=1)
    assert config_names(run) == ["l_step000000", "foreign", "l_step000001"]
    entries = served(tmp_path, "dup")
    np.testing.assert_array_equal(entries["foreign"]["tensor"], [[1, 2], [3, 4]])


def test_logdir_itself_as_the_run(tmp_path, rng):
    values = rng.normal(size=(5, 4)).astype(np.float32)
    with ProjectorWriter(tmp_path) as writer:
        assert writer.run == "."
        writer.add_embedding(values, layer="l", step=0)
    result = read_projector(tmp_path, summaries=False)
    assert result["runs"] == ["."]
    np.testing.assert_array_equal(result["embeddings"]["."]["l_step000000"]["tensor"], values)
    assert read_projector(tmp_path, num_rows=2)["embeddings"]["."]["l_step000000"][
        "tensor"
    ].shape == (2, 4)


def test_closing_a_writer_repairs_the_config(tmp_path, rng):
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    with ProjectorWriter(tmp_path, run="late") as writer:
        writer.add_embedding(rng.normal(size=(5, 3)), layer="fc1", step=0)
    # torch writing last rewrites the config with only its own entry ...
    with SummaryWriter(log_dir=str(tmp_path / "late")) as torch_writer:
        torch_writer.add_embedding(torch.randn(8, 4), tag="torch_b", global_step=1)
    assert config_names(tmp_path / "late") == ["torch_b:00001"]
    # ... and opening and closing a writer on the run puts ours back.
    ProjectorWriter(tmp_path, run="late").close()
    assert sorted(config_names(tmp_path / "late")) == ["fc1_step000000", "torch_b:00001"]
    assert sorted(served(tmp_path, "late")) == ["fc1_step000000", "torch_b:00001"]
