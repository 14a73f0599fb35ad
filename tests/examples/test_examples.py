"""The two example scripts run, reduced (`--quick`), on the embedded model, as a user would run
them: in a subprocess, writing under a temporary folder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: int = 1800) -> str:
    env = {**os.environ, "DEBUG": "1", "LOG_LEVEL": "WARNING"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the scripts configure their own site
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--quick", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_basic_example_runs_the_whole_workflow(tmp_path):
    out = _run("basic_steering_example.py", "--out", str(tmp_path))
    for heading in ("1. Data", "2. Steering vectors", "3. Steered", "4. The same through the REST API", "5. Evaluation"):
        assert heading in out
    assert out.count("POST /api/chat/ formality=") == 3
    report = json.loads((tmp_path / "evaluation-formality.json").read_text())
    assert report["dimension"] == "formality" and len(report["points"]) == 5
    assert (tmp_path / "evaluation-formality.png").stat().st_size > 1000
    assert (tmp_path / "formality.safetensors").is_file()


def test_the_paper_reproduction_prints_both_experiments_and_saves_plots(tmp_path):
    out = _run("paper_reproduction.py", "--dimensions", "cost", "--pair", "cost,formality", "--out", str(tmp_path))
    assert "Experiment 1" in out and "Experiment 3" in out
    figures = json.loads((tmp_path / "paper.json").read_text())
    assert set(figures["experiment_1"]) == {"cost"}
    assert len(figures["experiment_3"]["grid"]) == 9
    for plot in ("paper-exp1.png", "paper-exp3.png"):
        assert (tmp_path / plot).stat().st_size > 1000
