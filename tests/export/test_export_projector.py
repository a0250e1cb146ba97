"""Round trips through TensorBoard's own projector plugin: what we write is what it serves."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from latentlens.export import ExportWarning, ProjectorWriter, read_projector, tensor_name
from latentlens.export.writer import tensor_bytes

# Every field the projector's loadState/bookmark panel reads from a State.
STATE_FIELDS = {
    "label", "isSelected", "dataSetDimensions", "projections", "selectedProjection",
    "umapIs3d", "umapNeighbors", "umapMinDist", "tSNEIteration", "tSNEPerplexity",
    "tSNELearningRate", "tSNEis3d", "pcaComponentDimensions", "selectedPoints",
    "customSelectedSearchByMetadataOption", "customXLeftText", "customXLeftRegex",
    "customXRightText", "customXRightRegex", "customYUpText", "customYUpRegex",
    "customYDownText", "customYDownRegex", "selectedColorOptionName",
    "forceCategoricalColoring", "selectedLabelOption",
}  # fmt: skip


def test_full_embedding_reads_back_through_the_plugin(tmp_path, rng):
    n = 300
    values = rng.normal(size=(n, 16)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    scores = rng.random(n)
    layout = rng.normal(size=(n, 2))
    images = rng.integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8)

    with ProjectorWriter(tmp_path, run="demo") as writer:
        name = writer.add_embedding(
            values,
            layer="fc1",
            step=3,
            metadata={
                "label": labels,
                "score": scores,
                "id": [f"s{i}" for i in range(n)],
                "sample_id": np.arange(1000, 1000 + n),
            },
            images=images,
            layout=layout,
        )
    assert name == tensor_name("fc1", 3) == "fc1_step000003"

    result = read_projector(tmp_path)
    assert result["errors"] == []
    assert result["enabled"] is True
    assert result["runs"] == ["demo"]
    entry = result["embeddings"]["demo"][name]
    assert entry["shape"] == (n, 16)
    assert entry["info"]["tensorPath"].endswith("tensor.bin")
    np.testing.assert_array_equal(entry["tensor"], values)

    assert entry["metadata_columns"] == ["label", "score", "id", "sample_id", "index"]
    rows = entry["metadata_rows"]
    assert len(rows) == n
    assert [row[0] for row in rows] == [str(v) for v in labels]
    np.testing.assert_array_equal([float(row[1]) for row in rows], scores)
    assert [row[3] for row in rows] == [str(1000 + i) for i in range(n)]
    assert [row[4] for row in rows] == [str(i) for i in range(n)]

    # One bookmark per colour column the projector offers: label (10 values, categorical)
    # and score (numeric, gradient). The projector does not offer id (300 distinct
    # strings), and integer identifiers (sample_id, index) show nothing as colours.
    states = entry["bookmarks"]
    assert [s["selectedColorOptionName"] for s in states] == ["label", "score"]
    assert [s["forceCategoricalColoring"] for s in states] == [True, False]
    for state in states:
        assert STATE_FIELDS <= set(state)
        assert state["selectedProjection"] == "umap"
        assert state["umapIs3d"] is False
        assert state["dataSetDimensions"] == [n, 16]
        assert state["selectedLabelOption"] == "label"
        assert len(state["projections"]) == n
        got = np.array([[p["umap-0"], p["umap-1"]] for p in state["projections"]])
        np.testing.assert_array_equal(got.astype(np.float32), layout.astype(np.float32))
        assert all(set(p) == {"umap-0", "umap-1"} for p in state["projections"])

    # Sprite: 18 x 18 grid of untouched 6 x 6 thumbnails, row-major.
    per_row = math.ceil(math.sqrt(n))
    assert entry["info"]["sprite"]["singleImageDim"] == [6, 6]
    sprite = entry["sprite"]
    assert sprite.shape == (per_row * 6, per_row * 6, 3)
    for i in (0, 1, per_row, n - 1):
        row, col = divmod(i, per_row)
        np.testing.assert_array_equal(
            sprite[row * 6 : row * 6 + 6, col * 6 : col * 6 + 6], images[i]
        )


def test_three_d_layout_and_no_metadata(tmp_path, rng):
    values = rng.normal(size=(40, 5))
    layout = rng.normal(size=(40, 3))
    with ProjectorWriter(tmp_path, run="r3") as writer:
        name = writer.add_embedding(values, layer="encoder.layer.0/out", step=12, layout=layout)
    assert name == "encoder.layer.0_out_step000012"
    entry = read_projector(tmp_path)["embeddings"]["r3"][name]
    # With no user column the metadata is the bare index: one column, so no header.
    assert entry["metadata_columns"] == ["label"]
    assert [row[0] for row in entry["metadata_rows"]] == [str(i) for i in range(40)]
    (state,) = entry["bookmarks"]
    assert state["umapIs3d"] is True
    assert state["tSNEis3d"] is True
    assert state["selectedColorOptionName"] == "No color map"
    assert state["selectedLabelOption"] == "label"
    got = np.array([[p["umap-0"], p["umap-1"], p["umap-2"]] for p in state["projections"]])
    np.testing.assert_array_equal(got.astype(np.float32), layout.astype(np.float32))
    np.testing.assert_allclose(entry["tensor"], values.astype(np.float32))


HOSTILE = [
    "tab\there",
    "line\nbreak",
    "carriage\rreturn",
    "crlf\r\n",
    "",
    "   ",
    "\t",
    "\n",
    "ünïcødé 漢字 🙂",
    "nan",
    "NaN",
    "inf",
    "x" * 20_000,
    "sep\u2028arator",
    "next\x85line",
    None,
    float("nan"),
    "ok",
]


def _expected(value) -> str:
    """Independent statement of the cleaning rule for a text column."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    for bad in ("\t", "\n", "\r", "\u2028", "\x85"):
        value = value.replace(bad, " ")
    return " ".join(value.split(" ")).strip()


def test_hostile_labels_keep_one_row_per_point(tmp_path, rng):
    n = len(HOSTILE) * 3
    labels = HOSTILE * 3
    numbers = ([1.5, float("nan"), float("inf"), -2, None, "nan"] * n)[:n]
    values = rng.normal(size=(n, 4))
    with ProjectorWriter(tmp_path, run="hostile") as writer:
        name = writer.add_embedding(
            values, layer="fc", step=0, metadata={"label": labels, "number": numbers},
            layout=rng.normal(size=(n, 2)),
        )  # fmt: skip
    entry = read_projector(tmp_path)["embeddings"]["hostile"][name]
    rows = entry["metadata_rows"]
    assert entry["metadata_columns"] == ["label", "number", "index"]
    assert len(rows) == n == entry["shape"][0]
    assert all(len(row) == 3 for row in rows)
    assert [row[2] for row in rows] == [str(i) for i in range(n)]
    for row, label in zip(rows, labels, strict=True):
        assert row[0] == _expected(label)
    assert rows[HOSTILE.index("ünïcødé 漢字 🙂")][0] == "ünïcødé 漢字 🙂"
    assert len(rows[HOSTILE.index("x" * 20_000)][0]) == 20_000
    # In a text column "nan" is a label; in a numeric column NaN/inf are missing values.
    assert rows[HOSTILE.index("nan")][0] == "nan"
    assert [row[1] for row in rows[:6]] == ["1.5", "", "", "-2", "", ""]
    for state in entry["bookmarks"]:
        assert len(state["projections"]) == n


def test_text_like_tensor_falls_back_to_tsv(tmp_path, rng):
    zeros = np.zeros((6, 3), np.float32)
    # First float's bytes are 01 01 01 0a: valid UTF-8 up to a newline, so TensorBoard would
    # parse garbage as a text line. Later bytes are not UTF-8.
    tricky = rng.normal(size=(20, 4)).astype(np.float32)
    tricky[0, 0] = np.frombuffer(b"\x01\x01\x01\x0a", "<f4")[0]
    assert tensor_bytes(zeros)[1] == "tsv"
    assert tensor_bytes(tricky)[1] == "tsv"
    assert tensor_bytes(rng.normal(size=(20, 4)))[1] == "bin"

    with ProjectorWriter(tmp_path, run="t") as writer:
        writer.add_embedding(zeros, layer="zeros", step=0)
        writer.add_embedding(tricky, layer="tricky", step=0)
    result = read_projector(tmp_path)
    assert result["errors"] == []
    entries = result["embeddings"]["t"]
    np.testing.assert_array_equal(entries["zeros_step000000"]["tensor"], zeros)
    np.testing.assert_array_equal(entries["tricky_step000000"]["tensor"], tricky)
    assert entries["tricky_step000000"]["info"]["tensorPath"].endswith("tensor.tsv")


def test_raw_text_like_tensor_breaks_tensorboard(tmp_path, rng):
    """Control: a tensor whose raw bytes are valid UTF-8 with a line break breaks TensorBoard.

    Our writer stores it as TSV (checked here and above); written raw, TensorBoard's
    /runs route fails while parsing it as text.
    """
    tricky = np.full((20, 4), np.frombuffer(b"\x01\x01\x01\x0a", "<f4")[0])
    assert tensor_bytes(tricky)[1] == "tsv"
    run = tmp_path / "raw"
    with ProjectorWriter(tmp_path, run="raw"):
        pass
    (run / "t.bin").write_bytes(tricky.astype("<f4").tobytes())
    config = ProjectorConfig()
    info = config.embeddings.add(tensor_name="t", tensor_path="t.bin")
    info.tensor_shape.extend([20, 4])
    (run / "projector_config.pbtxt").write_text(text_format.MessageToString(config))
    result = read_projector(tmp_path, summaries=False)
    assert result["runs"] == []
    (error,) = result["errors"]
    assert error["route"] == "runs"
    assert error["status"] == 500
    assert "could not convert string to float" in error["message"]


def test_more_than_max_points_is_subsampled_deterministically(tmp_path, rng):
    n, keep = 130, 50
    values = rng.normal(size=(n, 3))
    layout = rng.normal(size=(n, 2))
    images = rng.integers(0, 256, size=(n, 2, 2), dtype=np.uint8)
    labels = [f"p{i}" for i in range(n)]
    for run in ("a", "b"):
        with ProjectorWriter(tmp_path, run=run, max_points=keep) as writer:
            with pytest.warns(ExportWarning, match="130 points is more than max_points=50"):
                writer.add_embedding(
                    values, layer="l", step=1, metadata={"label": labels}, images=images,
                    layout=layout,
                )  # fmt: skip
    result = read_projector(tmp_path)
    a, b = (result["embeddings"][run]["l_step000001"] for run in ("a", "b"))
    index = np.array([int(row[1]) for row in a["metadata_rows"]])
    assert len(index) == keep
    assert np.all(np.diff(index) > 0)  # sorted and distinct
    assert [row[0] for row in a["metadata_rows"]] == [f"p{i}" for i in index]
    np.testing.assert_array_equal(a["tensor"], values[index].astype(np.float32))
    got = np.array([[p["umap-0"], p["umap-1"]] for p in a["bookmarks"][0]["projections"]])
    np.testing.assert_array_equal(got.astype(np.float32), layout[index].astype(np.float32))
    assert a["sprite"][0:2, 2:4].tolist() == images[index[1]].tolist()
    assert a["metadata_rows"] == b["metadata_rows"]


def test_default_limit_is_the_browsers_100000_rows(tmp_path, rng):
    values = rng.normal(size=(100_003, 2)).astype(np.float32)
    with ProjectorWriter(tmp_path, run="big") as writer:
        with pytest.warns(ExportWarning, match="100003 points"):
            writer.add_embedding(values, layer="l", step=0)
    entry = read_projector(tmp_path, summaries=False)["embeddings"]["big"]["l_step000000"]
    assert entry["shape"] == (100_000, 2) == entry["tensor"].shape
    index = np.array([int(row[0]) for row in entry["metadata_rows"]])
    np.testing.assert_array_equal(entry["tensor"], values[index])


def test_large_images_shrink_to_an_8192_pixel_sprite(tmp_path):
    n, side = 300, 460  # 18 per row x 460 px = 8280 px > 8192
    shades = (np.arange(n) * 7 % 251).astype(np.uint8)
    images = np.broadcast_to(shades[:, None, None], (n, side, side))
    with ProjectorWriter(tmp_path, run="s") as writer:
        writer.add_embedding(np.eye(n, 3) + np.arange(n)[:, None], layer="l", step=0, images=images)
    entry = read_projector(tmp_path, summaries=False)["embeddings"]["s"]["l_step000000"]
    thumb = entry["info"]["sprite"]["singleImageDim"]
    assert thumb == [455, 455]  # floor(460 * 8192 / 8280)
    sprite = entry["sprite"]
    assert sprite.shape == (18 * 455, 18 * 455)
    assert max(sprite.shape) <= 8192
    for i in (0, 17, 18, n - 1):
        row, col = divmod(i, 18)
        tile = sprite[row * 455 : (row + 1) * 455, col * 455 : (col + 1) * 455]
        assert np.all(tile == shades[i])


def test_non_square_and_float_images(tmp_path, rng):
    images = rng.random((5, 4, 7))
    with ProjectorWriter(tmp_path, run="f") as writer:
        writer.add_embedding(rng.normal(size=(5, 3)), layer="l", step=0, images=images)
    entry = read_projector(tmp_path, summaries=False)["embeddings"]["f"]["l_step000000"]
    assert entry["info"]["sprite"]["singleImageDim"] == [7, 4]
    assert entry["sprite"].shape == (3 * 4, 3 * 7)
    np.testing.assert_array_equal(entry["sprite"][4:8, 7:14], np.round(images[4] * 255))


def test_export_package_needs_neither_torch_nor_numba():
    code = (
        "import sys, latentlens.export\n"
        "bad = [m for m in ('torch', 'numba', 'latentlens.umap') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bookmarks_file_is_valid_json_on_disk(tmp_path, rng):
    with ProjectorWriter(tmp_path, run="j") as writer:
        writer.add_embedding(
            rng.normal(size=(10, 3)), layer="l", step=0,
            metadata={"label": ["é\t\"quoted\"\\"] * 10}, layout=rng.normal(size=(10, 2)),
        )  # fmt: skip
    (path,) = (tmp_path / "j").rglob("bookmarks.json")
    states = json.loads(path.read_text(encoding="utf-8"))
    assert states[0]["selectedLabelOption"] == "label"


class FrameLike:
    """The part of a data frame the writer uses: ``columns`` and ``items()``."""

    def __init__(self, columns: dict) -> None:
        self._columns = columns
        self.columns = list(columns)

    def items(self):
        return self._columns.items()


class LabelIndexed:
    """A column whose ``[]`` looks up labels, like a pandas Series with its own index."""

    def __init__(self, values, labels) -> None:
        self._by_label = dict(zip(labels, values, strict=True))
        self._values = list(values)

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self):
        return iter(self._values)

    def __getitem__(self, label):
        return self._by_label[label]


def test_frame_like_metadata_is_read_by_position(tmp_path, rng):
    n = 30
    column = LabelIndexed([f"v{i}" for i in range(n)], labels=range(100, 100 + n))
    with ProjectorWriter(tmp_path, run="df", max_points=20) as writer:
        with pytest.warns(ExportWarning):
            writer.add_embedding(rng.normal(size=(n, 3)), layer="l", step=0,
                                 metadata=FrameLike({"word": column}))  # fmt: skip
    entry = read_projector(tmp_path, summaries=False)["embeddings"]["df"]["l_step000000"]
    for word, index in entry["metadata_rows"]:
        assert word == f"v{index}"


def test_torch_writer_loses_rows_on_hostile_labels(tmp_path, rng):
    """Control for the hostile-label test: torch's writer, given the same labels, breaks rows."""
    torch = pytest.importorskip("torch")
    from torch.utils.tensorboard import SummaryWriter

    labels = [str(label) for label in HOSTILE if isinstance(label, str)]
    with SummaryWriter(log_dir=str(tmp_path / "torch")) as writer:
        writer.add_embedding(torch.randn(len(labels), 3), metadata=labels, tag="t")
    entry = read_projector(tmp_path, summaries=False)["embeddings"]["torch"]["t:00000"]
    assert len(entry["metadata_rows"]) != len(labels)


def test_torch_tensors_are_accepted_everywhere(tmp_path):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(12, 4, generator=generator, requires_grad=True)
    labels = torch.arange(12) % 3
    with ProjectorWriter(tmp_path, run="t") as writer:
        name = writer.add_embedding(
            values * 2, layer="l", step=0, metadata={"label": labels},
            images=torch.rand(12, 3, 3, generator=generator), layout=torch.randn(12, 2),
        )  # fmt: skip
    entry = read_projector(tmp_path, summaries=False)["embeddings"]["t"][name]
    np.testing.assert_array_equal(entry["tensor"], (values * 2).detach().numpy())
    assert [row[0] for row in entry["metadata_rows"]] == [str(i % 3) for i in range(12)]
