"""A second run on the same corpus and reference reuses the shared corpus and reference embeddings, and gets
the same results as a run that embeds them itself (``embed.cache=false``). Through the command line and the
run folder only.

The cache root is ``$XDG_CACHE_HOME/equal``, which ``conftest.py`` points at a folder of this test session.
"""

import os
import re
from pathlib import Path

import pytest

from conftest import equal_cli, run_args
from equal.run import work_log

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

REUSED = re.compile(r"(corpus|reference) embeddings(?: \((\w+) sample\))? reused from (\S+)")


@pytest.fixture(scope="module")
def second_runs(math_cli_run, slice400, tmp_path_factory):
    """Two more runs like ``math_cli_run``: one sharing the embedding cache, one with it off."""
    base = tmp_path_factory.mktemp("shared-emb")
    shared = equal_cli(*run_args(slice400, base / "shared"))
    own = equal_cli(*run_args(slice400, base / "own", "--set", "embed.cache=false"))
    return base / "shared", shared, base / "own", own


def test_second_run_says_it_reused_the_corpus_and_reference_embeddings(second_runs):
    shared_dir, shared, _, _ = second_runs
    assert shared.returncode == 0, shared.stderr[-3000:]
    found = {m.group(2) or m.group(1): Path(m.group(3)) for m in REUSED.finditer(shared.stderr)}
    assert set(found) == {"corpus", "reward", "prior"}, f"reuse lines missing on stderr:\n{shared.stderr[-3000:]}"
    cache_root = Path(os.environ["XDG_CACHE_HOME"]) / "equal"
    for reused in found.values():
        assert reused.is_file() and cache_root in reused.parents, (reused, cache_root)
    (proc,) = work_log(shared_dir)  # and it really embedded neither
    assert proc["embedded"] == 0 and proc["reference"] == 0, proc


def test_embedding_cache_off_embeds_again_and_says_nothing_about_reuse(second_runs):
    _, _, own_dir, own = second_runs
    assert own.returncode == 0, own.stderr[-3000:]
    assert not REUSED.search(own.stderr), own.stderr[-3000:]
    (proc,) = work_log(own_dir)
    assert proc["embedded"] == 400 and proc["reference"] > 0, proc


@pytest.mark.parametrize("name", ["dataset.jsonl", "rounds.jsonl"])
def test_reused_embeddings_give_byte_identical_results(math_cli_run, second_runs, name):
    first, _ = math_cli_run
    shared_dir, shared, own_dir, own = second_runs
    assert shared.returncode == 0 and own.returncode == 0
    data = (own_dir / name).read_bytes()
    assert data  # not trivially equal
    assert (shared_dir / name).read_bytes() == data
    assert (first / name).read_bytes() == data
