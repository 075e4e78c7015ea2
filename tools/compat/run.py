"""Run stabilize's own tests against stabilize_redis and tabulate the outcome.

``python -m tools.compat.run TESTS_DIR [FILE ...] [-k EXPR] [--timeout S] [--junit PATH] [-- PYTEST_ARGS]``

``TESTS_DIR`` is a checkout's ``tests/`` folder (or any folder of stabilize test files whose
parent is the rootdir, so that they import as ``tests.test_x``). pytest runs in a subprocess
with stabilize's conftest disabled (``--noconftest``) and ``tools.compat.conftest_plugin``
loaded instead; each test has a timeout (pytest-timeout). The junit report is then read back
and printed as: one row per file (passed, failed, errors, skipped), the overall pass rate, and
the failures grouped by cause with one example each. A file that cannot be imported counts as
errors for every test function it defines (counted statically, doubled where a test uses the
backend-parametrised fixtures), so an unimportable file never improves the rate.

Exit status: 0 when the report was produced (whatever the pass rate), 2 on bad arguments or
when a real ``stabilize`` distribution is importable (the aliases would be meaningless).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: fixtures that carry stabilize's ``backend`` parametrisation (two runs per test).
PARAMETRISED_FIXTURES = {"backend", "repository", "queue", "file_repository", "file_queue"}

#: (group, pattern on "type: message"), first match wins.
CAUSES: list[tuple[str, re.Pattern[str]]] = [
    ("timeout", re.compile(r"Timeout")),
    ("missing module", re.compile(r"ModuleNotFoundError|No module named")),
    ("missing name (ImportError)", re.compile(r"ImportError|cannot import name")),
    ("not executed: refused (NotExecutedError/WorkflowValidationError)",
     re.compile(r"NotExecutedError|WorkflowValidationError|not executed by this engine")),
    ("message type refused at push", re.compile(r"no handler|not pushable|is refused", re.I)),
    ("missing fixture", re.compile(r"fixture '.*' not found")),
    ("missing attribute (AttributeError)", re.compile(r"AttributeError")),
    ("signature mismatch (TypeError)", re.compile(r"TypeError")),
    ("assertion", re.compile(r"AssertionError|^assert |\bassert\b")),
]


@dataclass
class FileRow:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    note: str = ""

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped


@dataclass
class Report:
    rows: dict[str, FileRow] = field(default_factory=lambda: defaultdict(FileRow))
    groups: Counter[str] = field(default_factory=Counter)
    examples: dict[str, tuple[str, str]] = field(default_factory=dict)

    def record_failure(self, test_id: str, text: str, weight: int = 1) -> None:
        group = classify(text)
        self.groups[group] += weight
        self.examples.setdefault(group, (test_id, one_line(text)))


def classify(text: str) -> str:
    """The cause group of a failure/error text (its exception type and message)."""
    for group, pattern in CAUSES:
        if pattern.search(text):
            return group
    match = re.search(r"\b([A-Z]\w*(?:Error|Exception))\b", text)
    return f"other: {match.group(1)}" if match else "other"


def one_line(text: str, width: int = 150) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def static_test_count(path: Path) -> int:
    """Tests a file defines, counted from its source: ``test_*`` functions at module level
    and in ``Test*`` classes, two for those taking a backend-parametrised fixture."""
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return 1
    count = 0

    def visit(funcs: list[ast.stmt]) -> None:
        nonlocal count
        for node in funcs:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test"):
                args = {a.arg for a in node.args.args}
                count += 2 if args & PARAMETRISED_FIXTURES else 1

    visit(tree.body)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            visit(node.body)
    return max(count, 1)


def _file_of(case: ET.Element, tests_dir: Path) -> str:
    file_attr = case.get("file")
    if file_attr:
        return Path(file_attr).name
    classname = case.get("classname", "")
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        candidate = tests_dir.joinpath(*parts[1:i]).with_suffix(".py")
        if candidate.exists():
            return candidate.name
    return classname or "?"


def read_junit(junit: Path, tests_dir: Path) -> Report:
    report = Report()
    root = ET.parse(junit).getroot()
    for case in root.iter("testcase"):
        name = case.get("name", "")
        file_name = _file_of(case, tests_dir)
        test_id = f"{file_name}::{name}"
        failure = case.find("failure")
        error = case.find("error")
        skipped = case.find("skipped")
        row = report.rows[file_name]
        if failure is not None or error is not None:
            node = failure if failure is not None else error
            assert node is not None
            text = f"{node.get('message', '')}\n{node.text or ''}"
            summary = node.get("message", "") or (node.text or "")
            collection = error is not None and node.get("message", "") == "collection failure"
            if collection:
                # A module that cannot be imported: weigh it by the tests it would have run.
                path = tests_dir / file_name
                weight = static_test_count(path) if path.exists() else 1
                row.errors += weight
                row.note = f"not importable ({weight} tests counted)"
                report.record_failure(file_name, _cause_line(text) or summary, weight)
                continue
            if failure is not None:
                row.failed += 1
            else:
                row.errors += 1
            report.record_failure(test_id, _cause_line(text) or summary)
        elif skipped is not None:
            row.skipped += 1
        else:
            row.passed += 1
    return report


def _cause_line(text: str) -> str:
    """The most telling line of a traceback: the last ``E   Xxx: ...`` line, else the first."""
    lines = [ln[1:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    typed = [ln for ln in lines if re.match(r"[\w.]+(Error|Exception|Exit)\b|Failed:", ln)]
    if typed:
        return typed[-1]
    if lines:
        return lines[0]
    first = text.strip().splitlines()
    return first[0] if first else ""


def render(report: Report) -> str:
    out: list[str] = []
    width = max([len(f) for f in report.rows] + [20])
    out.append(f"{'file'.ljust(width)}  passed  failed  errors  skipped  pass%")
    totals = FileRow()
    for file_name in sorted(report.rows):
        row = report.rows[file_name]
        run = row.total - row.skipped
        pct = f"{100.0 * row.passed / run:5.1f}" if run else "  -  "
        out.append(f"{file_name.ljust(width)}  {row.passed:6d}  {row.failed:6d}  {row.errors:6d}  "
                   f"{row.skipped:7d}  {pct}  {row.note}".rstrip())
        totals.passed += row.passed
        totals.failed += row.failed
        totals.errors += row.errors
        totals.skipped += row.skipped
    run = totals.total - totals.skipped
    pct = f"{100.0 * totals.passed / run:5.1f}" if run else "  -  "
    out.append(f"{'TOTAL'.ljust(width)}  {totals.passed:6d}  {totals.failed:6d}  {totals.errors:6d}  "
               f"{totals.skipped:7d}  {pct}")
    out.append("")
    out.append("failure causes (count, group, one example):")
    for group, count in report.groups.most_common():
        test_id, cause = report.examples[group]
        out.append(f"  {count:5d}  {group}")
        out.append(f"         e.g. {test_id}: {cause}")
    return "\n".join(out)


def real_stabilize_installed() -> bool:
    """True when a distribution named ``stabilize`` is importable (before our aliases)."""
    return importlib.util.find_spec("stabilize") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compat.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("tests_dir", type=Path, help="stabilize's tests/ folder")
    parser.add_argument("files", nargs="*", help="test files inside tests_dir (default: all)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("--timeout", type=float, default=120.0, help="per-test timeout, seconds")
    parser.add_argument("--junit", type=Path, help="keep the junit report here")
    raw = list(sys.argv[1:] if argv is None else argv)
    extra = raw[raw.index("--") + 1:] if "--" in raw else []
    args = parser.parse_args(raw[: raw.index("--")] if "--" in raw else raw)
    tests_dir: Path = args.tests_dir.resolve()
    if not tests_dir.is_dir():
        parser.error(f"{tests_dir} is not a directory")
    if real_stabilize_installed():
        print("a real 'stabilize' is importable here; run in an environment without it", file=sys.stderr)
        return 2
    junit = args.junit or Path(tempfile.mkstemp(prefix="stz-compat-", suffix=".xml")[1])
    targets = [str(tests_dir / f) for f in args.files] or [str(tests_dir)]
    command = [
        sys.executable, "-m", "pytest", *targets,
        "--noconftest", "-p", "tools.compat.conftest_plugin", "-p", "no:cacheprovider",
        "--continue-on-collection-errors",
        "--rootdir", str(tests_dir.parent), "--import-mode=prepend",
        f"--timeout={args.timeout:g}", "-o", "junit_family=xunit1", f"--junitxml={junit}",
        "-q", "--no-header", "-rN", "--tb=short",
        *(["-k", args.keyword] if args.keyword else []), *extra,
    ]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    completed = subprocess.run(command, cwd=tests_dir.parent, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    tail = completed.stdout.strip().splitlines()[-1:] if completed.stdout.strip() else []
    if not junit.exists() or junit.stat().st_size == 0:
        print(completed.stdout)
        return 2
    print(render(read_junit(junit, tests_dir)))
    if tail:
        print(f"\npytest: {tail[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
