"""``make mutation``: mutmut over each module of ``[tool.mutmut.modules]`` with that module's tests only.

For every module a scratch copy of the repository is made under ``mutants/<module>/`` (the package, the
tests and mutmut's ``also_copy``), with a pyproject.toml whose ``[tool.mutmut]`` is the repository's plus
``only_mutate = [module]`` and the module's test files as the test selection. mutmut then runs there: it
puts its mutated copy of the package first on sys.path (ahead of the editable install's finder, which
comes last) and checks, before any mutant, that forcing every mutated function to fail fails the tests,
so the code the tests import is the mutated code. The scratch copies stay for ``mutmut show`` and
``mutmut browse`` (run them inside ``mutants/<module>/``) and are wiped at the next run.

mutmut leaves decorated functions alone (all but @staticmethod and @classmethod): the body of
``quadrature._cached`` (@lru_cache) and properties such as ``GateResult.status`` are in no score.

Usage: python tests/mutation/run.py [MODULE ...] [--tests TEST_FILE ...] [--fail-under PERCENT]
(a MODULE is a path such as mlflow_xai/ci/gate.py or just its stem, gate; default: all of them; --tests
judges the modules named by these test files instead of their own, e.g. to score the tests of before)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # mutmut installs toml on Python 3.10
    import toml as tomllib

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = ROOT / "mutants"
KILLED = ("killed", "timeout", "segfault")  # a mutant the tests noticed; a segfault here is a hard kill
SPINNER = tuple("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")  # mutmut's progress animation, noise in its log
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "mutants")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (path or stem); default: all")
    parser.add_argument("--tests", nargs="+", default=None, help="test files instead of the modules' own")
    parser.add_argument("--fail-under", type=float, default=None, help="exit 1 if a module scores less (%%)")
    args = parser.parse_args(argv)

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    options = dict(tomllib.loads(text)["tool"]["mutmut"])
    table: dict[str, list[str]] = options.pop("modules")
    modules = _select(table, args.modules)

    started = time.monotonic()
    scores: dict[str, tuple[int, int] | None] = {}
    for module in modules:
        scores[module] = _run_module(module, args.tests or table[module], options, text)

    print("\n== Mutation scores (killed / total) ==")
    failed = False
    for module, score in scores.items():
        if score is None:
            print(f"  {module:32} did not run (see above)")
            failed = True
            continue
        killed, total = score
        pct = 100.0 * killed / total if total else 100.0
        print(f"  {module:32} {killed:4d} / {total:<4d} {pct:5.1f}%")
        if args.fail_under is not None and pct < args.fail_under:
            failed = True
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 1 if failed else 0


def _select(table: dict[str, list[str]], wanted: list[str]) -> list[str]:
    if not wanted:
        return list(table)
    by_stem = {Path(m).stem: m for m in table}
    out = []
    for name in wanted:
        module = name if name in table else by_stem.get(name)
        if module is None:
            raise SystemExit(f"unknown module {name!r}; [tool.mutmut.modules] lists {', '.join(table)}")
        out.append(module)
    return out


def _run_module(module: str, tests: list[str], options: dict, pyproject: str) -> tuple[int, int] | None:
    name = Path(module).stem
    work = SCRATCH / name
    print(f"\n== {module}: mutants judged by {' '.join(tests)} ==", flush=True)
    missing = [t for t in tests if not (ROOT / t).exists()]
    if missing:
        print(f"  missing test files: {', '.join(missing)}")
        return None
    _prepare(work, options, pyproject, module, tests)

    log = work / "mutmut.log"
    mutmut = Path(sys.executable).with_name("mutmut")
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as fh:
        # Two mutants run at once on a small machine: one thread each unless asked otherwise.
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        code = subprocess.call([str(mutmut), "run"], cwd=work, stdout=fh, stderr=subprocess.STDOUT, env=env)
    seconds = time.monotonic() - started
    results = _results(work, module)
    if code != 0 or not results:
        lines = log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
        tail = [line for line in lines if line.strip() and not line.lstrip().startswith(SPINNER)][-15:]
        print(f"  mutmut exited {code} after {seconds:.0f} s; the end of {log.relative_to(ROOT)}:")
        print("\n".join("    " + line for line in tail))
        _explain(work, tests)
        return None

    counts: dict[str, int] = {}
    for status in results.values():
        counts[status] = counts.get(status, 0) + 1
    killed = sum(counts.get(s, 0) for s in KILLED)
    total = len(results)
    detail = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"  {killed} / {total} killed ({100.0 * killed / max(total, 1):.1f}%) in {seconds:.0f} s: {detail}")
    survivors = sorted(k for k, s in results.items() if s not in KILLED)
    if survivors:
        lines = [f"surviving mutants ({len(survivors)}; `cd {work.relative_to(ROOT)} && mutmut show NAME`):"]
        for key in survivors:
            lines.append(f"  {key} [{results[key]}]")
            lines.extend(f"      {line}" for line in _diff(work, module, key))
        print("\n".join("  " + line for line in lines))
        (work / "survivors.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return killed, total


def _prepare(work: Path, options: dict, pyproject: str, module: str, tests: list[str]) -> None:
    """A fresh scratch copy: the package, the tests, also_copy, and the pyproject for this module."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for entry in [*options.get("source_paths", []), "tests/", *options.get("also_copy", [])]:
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, work / entry, ignore=IGNORE)
        elif source.is_file():
            (work / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / entry)
    config = {**options, "only_mutate": [module], "pytest_add_cli_args_test_selection": list(tests)}
    (work / "pyproject.toml").write_text(_without_mutmut(pyproject) + _toml_table(config), encoding="utf-8")


def _without_mutmut(text: str) -> str:
    """``text`` less its [tool.mutmut] and [tool.mutmut.*] tables."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        header = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            skipping = header.group(1) == "tool.mutmut" or header.group(1).startswith("tool.mutmut.")
        if not skipping:
            out.append(line)
    return "".join(out)


def _toml_table(config: dict) -> str:
    lines = ["", "[tool.mutmut]"]
    for key, value in config.items():
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, (int, float)):
            rendered = repr(value)
        elif isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            rendered = json.dumps(value)  # a JSON string or list of strings is a TOML one too
        else:
            raise SystemExit(f"[tool.mutmut] {key}: run.py cannot copy a {type(value).__name__} value")
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"


def _results(work: Path, module: str) -> dict[str, str]:
    """mutant name -> mutmut's status, from the meta file mutmut wrote for ``module``."""
    from mutmut.stats import status_by_exit_code

    meta = work / "mutants" / (module + ".meta")
    if not meta.is_file():
        return {}
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return {key: status_by_exit_code[code] for key, code in codes.items()}


def _diff(work: Path, module: str, key: str) -> list[str]:
    """The lines a mutant removes and adds (mutmut's diff without its context)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(work)
    try:
        diff = get_diff_for_mutant(key, path=Path(module))
    except Exception as exc:  # a display problem must not lose the scores
        return [f"(no diff: {exc})"]
    finally:
        os.chdir(cwd)
    return [
        line.rstrip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _explain(work: Path, tests: list[str]) -> None:
    """mutmut hides pytest's output: where the tests fail on the code as it is, show why."""
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    run = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"  the tests fail without any mutant (pytest exit {run.returncode}); fix them first:")
        print("\n".join("    " + line for line in run.stdout.splitlines()[-25:]))


if __name__ == "__main__":
    sys.exit(main())
