"""Bad input is refused at the entry point, before any write, with a message saying the fix."""

from __future__ import annotations

import numpy as np
import pytest

from latentlens.export import (
    ExportWarning,
    ProjectorWriter,
    read_projector,
    render_scatter,
    tensor_name,
)


def test_tensor_name_url_safe_and_sorted():
    assert tensor_name("fc1", 3) == "fc1_step000003"
    assert (
        tensor_name("encoder.layer.0/attention output", 7)
        == "encoder.layer.0_attention_output_step000007"
    )
    assert tensor_name("ünï:cøde", 1) == "n_c_de_step000001"
    assert tensor_name("///", 0) == "layer_step000000"
    names = [tensor_name("l", step) for step in (10, 9, 100, 1)]
    assert sorted(names) == [tensor_name("l", step) for step in (1, 9, 10, 100)]
    with pytest.raises(ValueError, match="layer must be a non-empty name"):
        tensor_name(" ", 1)
    with pytest.raises(TypeError, match="step must be a non-negative int"):
        tensor_name("l", 1.0)
    with pytest.raises(ValueError, match="step must be >= 0, got -1"):
        tensor_name("l", -1)


@pytest.mark.parametrize(
    "run",
    ["with space", "semi;colon", "../escape", "a//b", ".", "ünï", "q?x=1"],
)
def test_bad_run_names_create_nothing(tmp_path, run):
    logdir = tmp_path / "logs"
    with pytest.raises(ValueError, match="run must be made of '/'-separated parts"):
        ProjectorWriter(logdir, run=run)
    assert not logdir.exists()


def test_nested_run_names_are_allowed(tmp_path, rng):
    with ProjectorWriter(tmp_path, run="train/epochs") as writer:
        writer.add_embedding(rng.normal(size=(3, 2)), layer="l", step=0)
    assert (tmp_path / "train" / "epochs" / "projector_config.pbtxt").is_file()
    result = read_projector(tmp_path, summaries=False)
    assert result["runs"] == ["train/epochs"]
    assert result["errors"] == []


GOOD = {"layer": "fc1", "step": 0}


def snapshot(folder) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> content), to prove nothing was written."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"values": np.full((4, 3), np.nan)}, ValueError, r"values contains NaN or infinite entries in 4 rows"),  # noqa: E501
        ({"values": np.ones(5)}, ValueError, r"values must be 2-D with shape \(n_points, n_features\)"),  # noqa: E501
        ({"values": np.ones((1, 5))}, ValueError, "at least 2 rows and 2 columns"),
        ({"values": np.array([["a", "b"], ["c", "d"]])}, TypeError, "values must be a numeric array"),  # noqa: E501
        ({"metadata": {"label": [1, 2, 3]}}, ValueError, r"metadata\['label'\] has 3 values but values has 4 rows"),  # noqa: E501
        ({"metadata": {"label": "abcd"}}, TypeError, r"metadata\['label'\] must be a sequence"),
        ({"metadata": {"a\tb": [1, 2, 3, 4]}}, ValueError, "contains a tab, line break"),
        ({"metadata": {"index": [1, 2, 3, 4]}}, ValueError, "'index' is reserved"),
        ({"metadata": {"": [1, 2, 3, 4]}}, ValueError, "is empty"),
        ({"metadata": [1, 2, 3, 4]}, TypeError, "metadata must be a mapping"),
        ({"images": np.zeros((3, 2, 2))}, ValueError, "images has 3 images but values has 4 rows"),
        ({"images": np.zeros((4, 3, 2, 2))}, ValueError, r"images must have shape \(n, h, w\)"),
        ({"images": np.full((4, 2, 2), 2.0)}, ValueError, r"float images must lie in \[0, 1\]"),
        ({"layout": np.zeros((4, 4))}, ValueError, r"layout must have shape \(n, 2\) or \(n, 3\)"),
        ({"layout": np.zeros((5, 2))}, ValueError, "layout has 5 rows but values has 4"),
        ({"layout": np.array([[0, 0], [1, np.inf], [2, 2], [3, 3]])}, ValueError, "infinite coordinates in 1 rows"),  # noqa: E501
        ({"values": np.full((4, 3), 1e300)}, ValueError, "beyond float32"),
        ({"layout": np.full((4, 2), -1e300)}, ValueError, "beyond the float32 range"),
        ({"layer": ""}, ValueError, "layer must be a non-empty name"),
        ({"step": -2}, ValueError, "step must be >= 0"),
        ({"step": "3"}, TypeError, "step must be a non-negative int"),
        ({"layout_name": ""}, ValueError, "layout_name must be a non-empty str"),
    ],
)  # fmt: skip
def test_bad_embedding_input_writes_nothing(tmp_path, kwargs, error, match):
    writer = ProjectorWriter(tmp_path, run="v")
    before = snapshot(tmp_path)
    arguments = {"values": np.arange(12.0).reshape(4, 3), **GOOD, **kwargs}
    values = arguments.pop("values")
    with pytest.raises(error, match=match):
        writer.add_embedding(values, **arguments)
    assert snapshot(tmp_path) == before
    writer.close()
    assert not (tmp_path / "v" / "projector").exists()


def test_closed_writer_and_bad_summaries(tmp_path):
    writer = ProjectorWriter(tmp_path, run="s")
    with pytest.raises(ValueError, match="tag must be a non-empty name"):
        writer.add_scalar("a\nb", 1.0, step=0)
    with pytest.raises(TypeError, match="value must be a real number"):
        writer.add_scalar("x", "high", step=0)
    with pytest.raises(ValueError, match=r"image must have shape \(h, w\)"):
        writer.add_image("img", np.zeros((3, 8, 8)), step=0)
    with pytest.raises(ValueError, match="color_values has 2 values but layout has 3 rows"):
        writer.add_map_image("m", np.zeros((3, 2)), color_values=[1, 2], step=0, categorical=True)
    writer.close()
    writer.close()  # twice is fine
    with pytest.raises(ValueError, match="this ProjectorWriter is closed"):
        writer.add_scalar("x", 1.0, step=0)


def test_logdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="exists and is not a folder"):
        ProjectorWriter(path, run="r")


def test_render_scatter_input_checks():
    with pytest.raises(ValueError, match="layout contains NaN"):
        render_scatter(np.array([[0.0, np.nan]]), categorical=False)
    with pytest.raises(TypeError, match="color_values must be numbers when categorical=False"):
        render_scatter(np.zeros((2, 2)), ["a", "b"], categorical=False)
    with pytest.raises(ValueError, match="size must be between 32 and 8192"):
        render_scatter(np.zeros((2, 2)), categorical=True, size=8)


def test_max_points_cannot_exceed_what_the_browser_loads(tmp_path):
    with pytest.raises(ValueError, match="max_points must be <= 100000"):
        ProjectorWriter(tmp_path, run="m", max_points=100_001)
    assert not (tmp_path / "m").exists()


def test_two_layers_with_one_tensor_name_warn(tmp_path, rng):
    with ProjectorWriter(tmp_path, run="n") as writer:
        writer.add_embedding(rng.normal(size=(3, 2)), layer="block/1", step=0)
        with pytest.warns(ExportWarning, match="both map to tensor name 'block_1_step000000'"):
            writer.add_embedding(rng.normal(size=(3, 2)), layer="block 1", step=0)
