"""Tests cannot pass by skipping: without the shared data only the tests that need it are skipped (with the
data path in the reason), the others run; with ``CI`` set, a test that needs missing data fails.

Each case runs pytest in a subprocess with ``EQUAL_SHARED_DATA`` pointing at a folder that does not exist,
and reads the outcome of every test from its JUnit XML report.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]

# One test per way of saying "I need the data", and tests that do not.
PROBE = '''
import pytest

from conftest import REF_MATH, require_data
from servers.fixtures import read_docs


def test_pure():
    assert 1 + 1 == 2


def test_names_a_data_path():
    assert REF_MATH.name == "reference_math.jsonl"
    REF_MATH.read_text()


@pytest.mark.needs_data
def test_marked():
    pass


def test_slice_fixture(slice_path):
    pass


def test_corpus_records_fixture(corpus_records):
    pass


def test_calls_require_data():
    require_data()


def test_reads_documents():
    read_docs(2)


def test_llm_config_alone(llm_config):
    assert llm_config.llm.model == "test-model"


@pytest.fixture
def first_reference_line():
    return REF_MATH.read_text().splitlines()[0]


def test_fixture_names_a_data_path(first_reference_line):
    assert first_reference_line
'''
PURE = {"test_pure", "test_llm_config_alone"}
NEEDS_DATA = {"test_names_a_data_path", "test_marked", "test_slice_fixture", "test_corpus_records_fixture",
              "test_calls_require_data", "test_reads_documents", "test_fixture_names_a_data_path"}


def run_pytest(tmp_path, targets, ci, cwd):
    nowhere = tmp_path / "no-such-data"
    xml = tmp_path / f"report-{int(ci)}.xml"
    # a pytest of its own: not one of this session's xdist workers
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_XDIST")}
    env["EQUAL_SHARED_DATA"] = str(nowhere)
    if ci:
        env["CI"] = "true"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                        f"--junitxml={xml}", "-o", "junit_family=xunit2", *map(str, targets)],
                       capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    outcomes = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = case.get("name")
        kids = {child.tag: child for child in case}
        if "skipped" in kids:
            outcomes[name] = ("skipped", kids["skipped"].get("message", ""))
        elif "error" in kids or "failure" in kids:
            node = kids.get("error", kids.get("failure"))
            outcomes[name] = ("failed", (node.get("message") or "") + (node.text or ""))
        else:
            outcomes[name] = ("passed", "")
    return r, outcomes, nowhere


@pytest.fixture
def probe_dir(tmp_path):
    """A copy of this test folder's conftest.py and servers/, with the probe module beside them."""
    d = tmp_path / "tests"
    d.mkdir()
    shutil.copy(TESTS / "conftest.py", d / "conftest.py")
    shutil.copytree(TESTS / "servers", d / "servers", ignore=shutil.ignore_patterns("__pycache__"))
    (d / "test_probe.py").write_text(textwrap.dedent(PROBE))
    return d


def test_without_data_only_data_tests_skip_and_say_where(tmp_path, probe_dir):
    r, outcomes, nowhere = run_pytest(tmp_path, [probe_dir / "test_probe.py"], ci=False, cwd=probe_dir)
    assert set(outcomes) == PURE | NEEDS_DATA, r.stdout[-3000:]
    assert r.returncode == 0, r.stdout[-3000:]
    for name in PURE:
        assert outcomes[name][0] == "passed", (name, outcomes[name])
    for name in NEEDS_DATA:
        status, message = outcomes[name]
        assert status == "skipped", (name, outcomes[name])
        assert str(nowhere) in message, (name, message)


def test_with_ci_set_missing_data_fails(tmp_path, probe_dir):
    r, outcomes, nowhere = run_pytest(tmp_path, [probe_dir / "test_probe.py"], ci=True, cwd=probe_dir)
    assert r.returncode != 0
    for name in PURE:
        assert outcomes[name][0] == "passed", (name, outcomes[name])
    for name in NEEDS_DATA:
        status, message = outcomes[name]
        assert status == "failed", (name, outcomes[name])
        assert str(nowhere) in message and "CI" in message, (name, message)


def test_real_modules_without_data(tmp_path):
    """A module with both kinds (the reference loader's tests): the pure ones run, the real-data ones skip;
    with CI set they fail."""
    target = TESTS / "unit" / "test_reference.py"
    r, outcomes, nowhere = run_pytest(tmp_path, [target], ci=False, cwd=TESTS.parent)
    assert r.returncode == 0, r.stdout[-3000:]
    skipped = {n for n, (s, _) in outcomes.items() if s == "skipped"}
    passed = {n for n, (s, _) in outcomes.items() if s == "passed"}
    assert skipped and all(n.startswith("test_real_") for n in skipped), skipped
    assert all(str(nowhere) in outcomes[n][1] for n in skipped)
    assert len(passed) >= 8 and not any(n.startswith("test_real_") for n in passed), passed
    r, outcomes, _ = run_pytest(tmp_path, [target], ci=True, cwd=TESTS.parent)
    assert r.returncode != 0
    assert {n for n, (s, _) in outcomes.items() if s == "failed"} == skipped
    assert {n for n, (s, _) in outcomes.items() if s == "passed"} == passed
