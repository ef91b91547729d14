"""The package's layering, read from its imports: every stage imports only from the stages below it.

Each folder of ``mlflow_xai/`` is a stage of the audit's data flow; ``STAGES`` lists them from the
bottom up. The test reads every import statement of the package (module level, inside functions and
under ``TYPE_CHECKING`` alike) with ``ast``, so a lazy import cannot hide an arrow that runs back up.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlflow_xai"

#: From the bottom up: a stage may import from the stages before it and from itself.
STAGES = (
    "foundation",  # errors, strict, seeding, _version, _moved, datasets: no stage of the flow
    "checks",
    "model",
    "attribution",
    "config",
    "probe",
    "report",
    "engine",
    "distributed",
    "artifacts",
    "ci",
    "tracking",
    "lightning",  # the Lightning callback: the engine and tracking, for pytorch_lightning users
    "registry",  # the webhook receiver: audits run as the command line's children
    "cli",
    "package",  # mlflow_xai/__init__.py: the public names, loaded lazily
)
FOUNDATION = {"errors", "strict", "seeding", "_version", "_moved", "datasets"}

#: Arrows that must never exist, beyond the order: (importing stage, imported module prefix, why).
FORBIDDEN = (
    ("checks", "mlflow_xai.config", "checks are pure functions on arrays"),
    ("checks", "mlflow_xai.model", "checks are pure functions on arrays"),
    ("attribution", "mlflow_xai.engine", "methods know nothing of the run"),
    ("attribution", "mlflow_xai.report", "methods know nothing of the report"),
    ("attribution", "mlflow_xai.artifacts", "methods draw nothing"),
    ("engine", "mlflow_xai.distributed", "executors are found by name, not imported"),
    ("engine", "mlflow_xai.artifacts", "the engine keeps data; artifacts draw it"),
    ("ci", "mlflow_xai.engine", "a gate judges metrics, wherever they came from"),
)

#: Third-party packages that only some stages may import.
ONLY_IN = {
    "mlflow": {"tracking", "registry", "cli"},
    "ray": {"distributed"},
    "captum": {"attribution"},
    "pytorch_lightning": {"lightning"},
}

#: What config may take from attribution: the parameter models, which import no torch.
CONFIG_MAY_IMPORT = ("mlflow_xai.attribution.parameters",)


def stage_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts == ("__init__",):
        return "package"
    head = parts[0]
    return "foundation" if head in FOUNDATION else head


def module_stage(module: str) -> str | None:
    """The stage of an imported ``mlflow_xai...`` module (None for the bare package)."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return "foundation" if parts[1] in FOUNDATION else parts[1]


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``source``; ``from a import b`` gives ``a.b`` as
    well as ``a``, since ``b`` may be a submodule."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"line {node.lineno}: relative imports are not used in this package"
            found.append((node.lineno, node.module))
            if node.module.startswith("mlflow_xai"):
                found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def violations(path: Path, source: str) -> list[str]:
    """Every import of ``source`` (the file at ``path``) that breaks the layering, as a sentence."""
    stage = stage_of(path)
    rank = STAGES.index(stage)
    where = path.relative_to(PACKAGE.parent)
    out = []
    for line, module in imports_of(source):
        top = module.split(".")[0]
        if top in ONLY_IN and stage not in ONLY_IN[top]:
            out.append(f"{where}:{line} imports {module}; only {sorted(ONLY_IN[top])} may import {top}")
        if top != "mlflow_xai":
            continue
        target = module_stage(module)
        if target not in STAGES:  # ``from mlflow_xai.engine import audit``: a name, judged by its module
            continue
        if STAGES.index(target) > rank:
            out.append(f"{where}:{line} ({stage}) imports {module} ({target}), a stage above it")
        for importer, prefix, why in FORBIDDEN:
            if stage == importer and (module == prefix or module.startswith(prefix + ".")):
                out.append(f"{where}:{line} ({stage}) imports {module}: {why}")
        if stage == "config" and target == "attribution":
            allowed = module == "mlflow_xai.attribution" or any(
                module == m or module.startswith(m + ".") for m in CONFIG_MAY_IMPORT
            )
            if not allowed:
                out.append(f"{where}:{line} (config) imports {module}; config takes only {CONFIG_MAY_IMPORT}")
    return out


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_file_belongs_to_a_stage():
    unknown = {stage_of(p) for p in package_files()} - set(STAGES)
    assert not unknown, f"folders with no place in STAGES: {sorted(unknown)}; add each where it belongs"


def test_no_import_runs_back_up_the_flow():
    found = [v for path in package_files() for v in violations(path, path.read_text(encoding="utf-8"))]
    assert not found, "layering broken:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("file", "source", "expected"),
    [
        ("checks/x.py", "from mlflow_xai.config import AuditConfig", "a stage above it"),
        ("checks/x.py", "def f():\n    from mlflow_xai.model.handle import ModelHandle", "pure functions"),
        ("attribution/x.py", "from mlflow_xai.report import AuditReport", "know nothing of the report"),
        ("engine/x.py", "def f():\n    import mlflow_xai.distributed.ray", "found by name"),
        ("engine/x.py", "from mlflow_xai.artifacts.write import write_artifacts", "artifacts draw it"),
        ("ci/x.py", "from mlflow_xai.engine import audit", "wherever they came from"),
        ("config/x.py", "from mlflow_xai.attribution.methods import build", "config takes only"),
        ("report/x.py", "import mlflow", "may import mlflow"),
        ("engine/x.py", "from ray import data", "may import ray"),
        ("engine/x.py", "from captum.attr import Saliency", "may import captum"),
        ("probe/x.py", "from mlflow_xai import engine", "a stage above it"),
    ],
)
def test_the_check_finds_each_kind_of_wrong_arrow(file, source, expected):
    found = violations(PACKAGE / file, textwrap.dedent(source))
    assert any(expected in v for v in found), found


@pytest.mark.parametrize(
    ("file", "source"),
    [
        ("config/x.py", "from mlflow_xai.attribution.parameters import BaselineConfig"),
        ("engine/x.py", "from mlflow_xai.attribution.methods import build\nfrom mlflow_xai.report import X"),
        ("tracking/x.py", "import mlflow\nfrom mlflow_xai.engine import audit"),
        ("cli/x.py", "from mlflow_xai.ci.gate import judge"),
    ],
)
def test_the_check_allows_arrows_down_the_flow(file, source):
    assert violations(PACKAGE / file, source) == []


def test_the_old_flat_import_paths_still_work_and_warn():
    """Each path of the flat layout imports, with a DeprecationWarning naming the new home, and gives
    the very module that lives there (a second copy would register every method twice)."""
    script = textwrap.dedent(
        """
        import importlib, warnings
        from mlflow_xai._moved import MOVED
        for old, new in MOVED.items():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                module = importlib.import_module(old)
            assert module is importlib.import_module(new), old
            assert any(new in str(w.message) and w.category is DeprecationWarning for w in caught), old
        from mlflow_xai.methods.integrated_gradients import IntegratedGradients
        from mlflow_xai.attribution.methods import registered
        assert registered()["integrated_gradients"] is IntegratedGradients
        from mlflow_xai.gate import judge
        from mlflow_xai.ci import judge as new_judge
        assert judge is new_judge
        print("ok", len(MOVED))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_config_loads_without_torch_or_captum():
    """The schema takes method parameters from ``attribution.parameters`` alone, so validating a config
    (``mlflow-xai validate-config``, a gate) loads neither torch nor Captum."""
    script = (
        "import sys; from mlflow_xai.config import load_config; load_config('configs/default.yaml'); "
        "print(sorted(m for m in ('torch', 'captum') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=PACKAGE.parent
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
