"""The reference set drives the selection: the same slice, run once with the math reference and once with
the code reference, picks mostly documents of the reference's domain, clearly above a random pick's base
rate. Through the command line and the run folder only; the corpus's ``domain`` label is read by the test,
never by the pipeline.
"""

import pytest

from conftest import REF_CODE, bandit_ids, corpus_domains, equal_cli, run_args

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

MARGIN = 0.2  # above the base rate: a random pick of this size is within ~0.1 of it


@pytest.fixture(scope="module")
def domains(slice400):
    return corpus_domains(slice400)


@pytest.fixture(scope="module")
def code_run(slice400, tmp_path_factory):
    out = tmp_path_factory.mktemp("code-cli") / "run"
    r = equal_cli(*run_args(slice400, out, reference=REF_CODE))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def share(ids, domains, domain):
    assert ids
    return sum(domains[i] == domain for i in ids) / len(ids)


def base_rate(domains, domain):
    return sum(d == domain for d in domains.values()) / len(domains)


def test_code_reference_picks_mostly_code(code_run, domains):
    ids = bandit_ids(code_run)
    assert len(ids) == len(set(ids)) >= 15
    frac, base = share(ids, domains, "code"), base_rate(domains, "code")
    assert frac >= base + MARGIN, (frac, base)
    assert frac > 0.5, frac


def test_math_reference_picks_mostly_math(math_cli_run, domains):
    ids = bandit_ids(math_cli_run[0])
    frac, base = share(ids, domains, "math"), base_rate(domains, "math")
    assert frac >= base + MARGIN, (frac, base)
    assert frac > 0.5, frac


def test_each_reference_picks_more_of_its_own_domain_than_the_other_does(math_cli_run, code_run, domains):
    math_ids, code_ids = bandit_ids(math_cli_run[0]), bandit_ids(code_run)
    assert share(math_ids, domains, "math") > share(code_ids, domains, "math")
    assert share(code_ids, domains, "code") > share(math_ids, domains, "code")
