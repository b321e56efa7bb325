"""A write that fails mid-run (a full disk, a file-size limit) is one clear line: the system's message, the
file where one is known, never an empty "()"."""

import os
import resource
import subprocess
import sys

import pytest

from conftest import CORPUS, REF_MATH, run_args


@pytest.mark.slow
@pytest.mark.needs_data
def test_a_failed_write_is_one_line_without_empty_parentheses(tmp_path):
    corpus = tmp_path / "c.jsonl"
    with open(CORPUS, "rb") as src:
        corpus.write_bytes(b"".join(line for _, line in zip(range(40), src)))

    def small_files():  # a real fault: writes past 20 kB fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    args = run_args(corpus, tmp_path / "run", "--set", "score.prior_sample=50", "--set", "score.reference_sample=50",
                    reference=REF_MATH, budget=10)
    done = subprocess.run([sys.executable, "-m", "equal.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, preexec_fn=small_files,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    errors = [line for line in done.stderr.splitlines() if line.startswith("equal: error")]
    assert done.returncode != 0 and len(errors) == 1, done.stderr[-3000:]
    assert "File too large" in errors[0] and "()" not in errors[0], errors[0]
    assert "Traceback" not in done.stderr
