"""A gate's result where a pipeline reads it: JUnit XML, a markdown summary, GitHub annotations.
"""

from __future__ import annotations

import os
from xml.etree import ElementTree as ET

from mlflow_xai.ci.gate import GateResult

# --------------------------------------------------------------------------------------------------
# What a CI system reads


def junit_xml(result: GateResult, *, suite: str = "mlflow-xai") -> str:
    """One test case per method check and threshold; warn levels are passing cases with output."""
    failures = sum(c.level in result.fail_on for c in result.checks)
    root = ET.Element("testsuites", name=suite, tests=str(len(result.checks)), failures=str(failures))
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(result.checks)), failures=str(failures))
    for check in result.checks:
        case = ET.SubElement(node, "testcase", classname=f"{suite}.{check.kind}", name=check.name)
        if check.level in result.fail_on:
            failure = ET.SubElement(case, "failure", message=check.message, type=check.level)
            failure.text = check.message
        else:
            ET.SubElement(case, "system-out").text = f"{check.level}: {check.message}"
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def markdown_summary(result: GateResult, *, run_id: str | None = None) -> str:
    icon = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "unchecked": "UNCHECKED"}
    lines = [f"### mlflow-xai gate: {icon[result.status]}", ""]
    if run_id:
        lines += [f"MLflow run `{run_id}`", ""]
    lines += ["| check | level | detail |", "| --- | --- | --- |"]
    for c in result.checks:
        detail = c.message.replace("|", "\\|")
        lines.append(f"| `{c.name}` | {icon[c.level]} | {detail} |")
    lines.append("")
    return "\n".join(lines)


def github_annotations(result: GateResult) -> list[str]:
    """``::error``/``::warning`` workflow commands for checks that did not pass."""
    out = []
    for c in result.checks:
        if c.level == "pass":
            continue
        command = "error" if c.level in result.fail_on else "warning"
        message = c.message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        out.append(f"::{command} title=mlflow-xai {c.name}::{message}")
    return out


def publish(
    result: GateResult,
    *,
    junit: str | None = None,
    summary: str | None = None,
    run_id: str | None = None,
) -> list[str]:
    """Write the JUnit file and the markdown summary where asked (and to $GITHUB_STEP_SUMMARY);
    return the annotation lines to print when running on GitHub Actions."""
    if junit:
        _write(junit, junit_xml(result))
    text = markdown_summary(result, run_id=run_id)
    if summary:
        _write(summary, text)
    step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return github_annotations(result) if os.environ.get("GITHUB_ACTIONS") == "true" else []


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)  # never a half-written file where a CI system looks
