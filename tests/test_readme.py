"""The README's examples run as they are written."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_own_objective_with_populations_runs_as_written(tmp_path):
    (code,) = [block for block in python_blocks() if "class Rings" in block]
    (tmp_path / "rings.py").write_text(code)
    done = subprocess.run([sys.executable, "rings.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    best_params, _, best_value = done.stdout.strip().rpartition(" ")
    assert "'lr'" in best_params and float(best_value) < 0.3  # the rings are learnt


def test_the_own_objective_example_runs_as_written(tmp_path):
    (space,) = [b for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
                if "weight_decay" in b and "hidden" in b]
    (code,) = [block for block in python_blocks() if "class CancerMLP" in block]
    (tmp_path / "cancer.yaml").write_text(space)
    (tmp_path / "cancer.py").write_text(code)
    done = subprocess.run([sys.executable, "cancer.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("best {") and "'lr': " in line and float(line.rpartition("test ")[2]) > 0.9  # it learns
