"""The project as users get it: the wheel alone, every import declared, answers without heavy imports."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from conftest import ROOT, short_lr_wd

HEAVY = ("torch", "optuna", "mlflow", "ray")


def test_the_wheel_runs_a_search_in_a_fresh_environment_outside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # nothing of the repository's on the path
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = dist.glob("hpo-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies come from this environment's folder, added as a plain path: its own .pth
    # files (the editable install of hpo among them) are not read, so hpo is the wheel's alone.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shipped = ("import hpo, search_spaces; from hpo.spaces import load_space, resolve_space_path; "
               "print(hpo.__file__, search_spaces.__file__, resolve_space_path('lr_wd')); "
               "print(load_space(resolve_space_path('lr_wd')).name)")
    *where, name = subprocess.run([str(python), "-c", shipped], cwd=elsewhere, check=True, capture_output=True,
                                  text=True).stdout.split()
    assert all(path.startswith(str(site)) for path in where) and name == "lr_wd"  # the spaces ship in the wheel

    # The shipped space cut short (three trainings: two trials and the test).
    short_lr_wd(elsewhere)
    done = subprocess.run([str(venv / "bin" / "hpo"), "search", "lr_wd.yaml", "--trials", "2"], cwd=elsewhere,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2/2" in done.stderr and "Best trial" in done.stdout
    assert (elsewhere / ".hpo" / "optuna.db").exists()


def _imported_modules(folder: Path) -> set[str]:
    """The top-level modules that the Python files under ``folder`` import."""
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.partition(".")[0])
    return found


def test_every_import_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name.lower().replace("_", "-") for r in project["dependencies"]}
    ours = {"hpo", "objectives", "search_spaces"}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in _imported_modules(ROOT / "hpo") | _imported_modules(ROOT / "objectives"):
        if module in ours or module in sys.stdlib_module_names:
            continue
        names = {name.lower().replace("_", "-") for name in distributions.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(names)
    assert undeclared == {}


@pytest.mark.parametrize(
    "args",
    [["--help"], ["--version"], ["search", "--help"], ["worker", "--help"], ["search", "broken.yaml"]],
    ids=["help", "version", "search-help", "worker-help", "refused-space"],
)
def test_the_command_answers_without_heavy_imports(tmp_path, args):
    (tmp_path / "broken.yaml").write_text("metric: val_loss\ndirection: minimize\nparams: {lr: {type: float}}\n")
    code = (
        "import sys\nfrom hpo.cli import main\nsys.argv = ['hpo', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as stop:\n    code = stop.code\nelse:\n    code = 0\n"
        f"print('loaded', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\nsys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == (2 if args[-1] == "broken.yaml" else 0), done.stderr
    assert done.stderr.strip().splitlines()[-1] == "loaded"
    if args == ["--version"]:
        assert done.stdout == f"hpo {importlib.metadata.version('hpo')}\n"


def test_import_hpo_loads_no_engine():
    code = f"import sys, hpo; hpo.SearchSpace; hpo.OptunaOptions; print(*[m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


@pytest.mark.parametrize(("given", "spins"), [({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                              ({"OMP_WAIT_POLICY": "passive"}, None)])
def test_torchs_threads_spin_briefly_unless_the_user_said_how_they_wait(given, spins):
    """libgomp's threads spin 300,000 times before they sleep: a search with another beside it on
    the same cores trained several times slower (bench/shared_cores.py)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | given
    code = "import os, hpo; print(os.environ.get('GOMP_SPINCOUNT'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == str(spins)


def test_a_ray_trials_actor_loads_neither_mlflow_nor_the_trial_store():
    """What a fresh Ray actor imports to run its trials (the runner, the plan's strategies and
    space): the driver writes to MLflow and the store, and their imports took an actor three
    seconds before its first trial."""
    code = ("import sys, hpo.drivers.ray._runner, hpo.plan, hpo.strategies; "
            "print(*[m for m in ('torch', 'optuna', 'mlflow', 'sqlalchemy') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
