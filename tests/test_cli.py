"""The `latentlens` command through click's CliRunner, on real models and real text."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from latentlens.capture import POOLING_MODES, load_activations
from latentlens.cli import CAPTURE_POOLING, EXIT_DRIFT, main
from latentlens.datasets import docstring_corpus, license_paragraphs

LAST_LAYER = "encoder.layer.5"


def _invoke(*args):
    result = CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)
    return result


def _write_lines(path, texts):
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Text files: two interleaved halves of one docstring corpus, and license prose."""
    folder = tmp_path_factory.mktemp("texts")
    texts, labels = docstring_corpus()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))[:240]
    first = [{"text": texts[i], "label": labels[i]} for i in order[:120]]
    second = [{"text": texts[i], "label": labels[i]} for i in order[120:]]
    prose = license_paragraphs()
    if len(prose) < 20:
        pytest.skip("Python's LICENSE.txt is missing, so there is no second text domain")
    paths = {
        "docs_a": folder / "docs_a.jsonl",
        "docs_b": folder / "docs_b.jsonl",
        "license": _write_lines(folder / "license.txt", prose),
    }
    for key, records in (("docs_a", first), ("docs_b", second)):
        paths[key].write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def captured(corpora, minilm_path, tmp_path_factory):
    """Captures of the last MiniLM layer for each text file."""
    folder = tmp_path_factory.mktemp("captures")
    outputs = {}
    for key, path in corpora.items():
        output = folder / key
        result = _invoke(
            "capture", minilm_path, "--input", path, "--output", output, "--layers", LAST_LAYER
        )
        assert result.exit_code == 0, result.output
        outputs[key] = output
    return outputs


def test_help_lists_every_command():
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("demo", "capture", "project", "drift"):
        assert command in result.output


def test_capture_pooling_choices_match_library():
    assert set(CAPTURE_POOLING) == set(POOLING_MODES) - {"spatial_mean"}


def test_demo_command_writes_run(tmp_path, projector_client):
    result = _invoke("demo", "--logdir", tmp_path / "logs", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert f"tensorboard --logdir {tmp_path / 'logs'}" in result.output
    info = projector_client(tmp_path / "logs").json("info", run="digits")
    assert len(info["embeddings"]) == 2


def test_capture_matches_masked_mean(captured, corpora, minilm_path):
    from transformers import AutoModel, AutoTokenizer

    saved = load_activations(captured["docs_a"])[LAST_LAYER]
    records = [json.loads(line) for line in corpora["docs_a"].read_text().splitlines()]
    texts = [record["text"] for record in records]

    assert saved.values.shape == (len(texts), 384)
    assert saved.metadata["text"].tolist() == texts
    assert saved.metadata["label"].tolist() == [record["label"] for record in records]

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path).eval()
    batch = tokenizer(
        texts[:16], padding=True, truncation=True, max_length=256, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = (hidden * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(saved.values[:16], expected.numpy(), atol=1e-5)


def test_capture_glob_takes_every_encoder_layer(corpora, minilm_path, tmp_path):
    output = tmp_path / "all_layers"
    result = _invoke(
        "capture",
        minilm_path,
        "--input",
        corpora["license"],
        "--output",
        output,
        "--layers",
        "encoder.layer.*",
        "--batch-size",
        "64",
    )
    assert result.exit_code == 0, result.output
    layers = load_activations(output)
    assert sorted(layers) == [f"encoder.layer.{i}" for i in range(6)]


def test_capture_lists_layers(minilm_path):
    result = _invoke("capture", minilm_path, "--list-layers")
    assert result.exit_code == 0
    assert "encoder.layer.5.output" in result.output


def test_capture_needs_input_and_output(minilm_path):
    result = _invoke("capture", minilm_path, "--layers", LAST_LAYER)
    assert result.exit_code == 2
    assert "missing option --input and --output: capturing needs both" in result.output


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda m, t, p: [p / "no_such_model", "--input", t, "--layers", "x"], "does not exist"),
        (lambda m, t, p: [m, "--input", t, "--layers", "encoder.layr.5"], "encoder.layer"),
        (lambda m, t, p: [m, "--input", p / "inputs.csv", "--layers", LAST_LAYER], "suffix"),
        (lambda m, t, p: [m, "--input", p / "broken.jsonl", "--layers", LAST_LAYER], "line 2"),
        (lambda m, t, p: [m, "--input", t], "no --layers given"),
    ],
    ids=["missing-model", "misspelt-layer", "bad-suffix", "broken-jsonl", "no-layers"],
)
def test_capture_rejects_bad_input(minilm_path, corpora, tmp_path, make_args, message):
    (tmp_path / "inputs.csv").write_text("a,b\n")
    (tmp_path / "broken.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    output = tmp_path / "out"
    args = make_args(minilm_path, corpora["license"], tmp_path)
    result = _invoke("capture", *args, "--output", output)
    assert result.exit_code == 2
    assert message in result.output
    assert not output.exists()


def test_capture_keeps_existing_output(minilm_path, corpora, captured):
    before = sorted(p.name for p in captured["license"].iterdir())
    result = _invoke(
        "capture",
        minilm_path,
        "--input",
        corpora["license"],
        "--output",
        captured["license"],
        "--layers",
        LAST_LAYER,
    )
    assert result.exit_code == 2
    assert "--overwrite" in result.output
    assert sorted(p.name for p in captured["license"].iterdir()) == before


def test_project_writes_readable_run(captured, tmp_path, projector_client):
    result = _invoke("project", captured["docs_a"], "--logdir", tmp_path, "--run", "docs")
    assert result.exit_code == 0, result.output

    client = projector_client(tmp_path)
    info = client.json("info", run="docs")
    assert len(info["embeddings"]) == 1
    name = info["embeddings"][0]["tensorName"]
    tensor = np.frombuffer(client.get("tensor", run="docs", name=name), dtype="<f4")
    np.testing.assert_array_equal(
        tensor.reshape(120, 384), load_activations(captured["docs_a"])[LAST_LAYER].values
    )
    states = client.json("bookmarks", run="docs", name=name)
    assert len(states[0]["projections"]) == 120


def test_project_against_reference(captured, tmp_path, projector_client):
    result = _invoke(
        "project",
        captured["license"],
        "--reference",
        captured["docs_a"],
        "--logdir",
        tmp_path,
        "--run",
        "shift",
    )
    assert result.exit_code == 0, result.output
    assert "drift p=" in result.output
    client = projector_client(tmp_path)
    info = client.json("info", run="shift")
    assert len(info["embeddings"]) == 2
    text = client.get("metadata", run="shift", name=f"{LAST_LAYER}_step000001").decode("utf-8")
    rows = [line.split("\t") for line in text.splitlines()]
    flags = [row[rows[0].index("outlier")] for row in rows[1:]]
    # Legal prose is unlike every docstring, so most of it must be flagged.
    assert flags.count("yes") / len(flags) > 0.3


def test_drift_flags_other_domain(captured):
    result = _invoke("drift", captured["docs_a"], captured["license"], "--json", "--fail-on-drift")
    assert result.exit_code == EXIT_DRIFT
    report = json.loads(result.output)
    entry = report["layers"][0]
    assert entry["layer"] == LAST_LAYER
    assert entry["p_value"] < 0.01
    assert entry["drift"] is True


def test_drift_passes_identical_sets(captured):
    result = _invoke("drift", captured["docs_a"], captured["docs_a"], "--json", "--fail-on-drift")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["layers"][0]["p_value"] == 1.0


def test_drift_passes_random_halves(captured):
    # Two random halves of one corpus: the p-value is uniform under the null, so this fixed
    # split is checked at alpha 0.01.
    result = _invoke(
        "drift", captured["docs_a"], captured["docs_b"], "--alpha", "0.01", "--fail-on-drift"
    )
    assert result.exit_code == 0, result.output
    assert LAST_LAYER in result.output


def test_drift_by_class_table(captured):
    result = _invoke("drift", captured["docs_a"], captured["docs_b"], "--by-class")
    assert result.exit_code == 0, result.output
    assert "Holm-adjusted" in result.output
    assert "class mix (chi-square)" in result.output
    assert "class asyncio" in result.output


def test_drift_json_is_strict(captured):
    result = _invoke("drift", captured["docs_a"], captured["docs_b"], "--by-class", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output, parse_constant=pytest.fail)
    rows = report["layers"][0]["by_class"]["classes"]
    untested = [row for row in rows if row["status"] != "tested"]
    assert untested
    assert all(row["p_value"] is None for row in untested)


def test_drift_rejects_missing_folder(captured, tmp_path):
    result = _invoke("drift", captured["docs_a"], tmp_path / "missing")
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_drift_rejects_unknown_layer(captured):
    result = _invoke("drift", captured["docs_a"], captured["docs_b"], "--layers", "encoder.layr.5")
    assert result.exit_code == 2
    assert "not in the saved activations" in result.output
    assert "Did you mean encoder.layer.5?" in result.output
