"""SIGKILL of the process group while LLM requests are in flight (OpenAI-protocol test server), then resume.

The server answers every extraction request after a delay, so requests are in flight most of the time the
run extracts. Each process is killed right after the server received its k-th request (k drawn at random,
seeded): that request, and whatever else was in flight, never got its answer to the client. Checked:

* every resume ends byte-identical to a clean run (``dataset.jsonl``, ``rounds.jsonl``, ``extracted.jsonl``);
* the server saw each document at most once more than in the clean run per kill;
* a kill costs at most ``concurrency`` repeated requests (the ones in flight), and at least one (so the
  kills did land with requests in flight);
* the run's own work counters: each kill threw away at most one warm-up batch or one round of extraction.
"""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from conftest import REF_MATH, write_slice
from equal.run import work_log
from test_resume import _same_outputs, check_no_work_redone, clean_work

pytestmark = [pytest.mark.slow, pytest.mark.needs_data]

CONCURRENCY = 4
KILLS = 5


def _cmd(corpus, out, server, cache):
    return [sys.executable, "-m", "equal.cli", "run", "--corpus", str(corpus), "--reference", str(REF_MATH),
            "--out", str(out), "--set", "embed.max_seq_length=128", "--set", "embed.chunk_docs=128",
            "--set", "extract.batch_docs=16", "--set", "score.prior_sample=100", "--set", "align.warmup_fraction=0.5", "--set", "align.warmup_sampling=random",
            "--budget", "0.3", "--seed", "7",
            "--extractor", "openai", "--llm-base-url", server.url, "--llm-model", "m", "--cache-dir", str(cache),
            "--llm-concurrency", str(CONCURRENCY), "-q"]


def test_kills_with_llm_requests_in_flight_repeat_at_most_the_requests_in_flight(openai_server, tmp_path):
    corpus = write_slice(tmp_path / "corpus.jsonl", 300)
    openai_server.faults.latency = 0.25
    clean_dir, out = tmp_path / "clean", tmp_path / "killed"
    r = subprocess.run(_cmd(corpus, clean_dir, openai_server, tmp_path / "cache-clean"), capture_output=True,
                       text=True, timeout=600, start_new_session=True)
    assert r.returncode == 0, r.stderr[-3000:]
    n_clean = len(openai_server.seen)
    clean_per_doc = {}
    for s in openai_server.seen:
        if s.kind == "extract":
            clean_per_doc[s.doc] = clean_per_doc.get(s.doc, 0) + 1
    assert clean_per_doc and set(clean_per_doc.values()) == {1}

    # the killed run: its own cache (and its own shared-embedding cache root, the same --cache-dir)
    rng = random.Random(3)
    cache = tmp_path / "cache-killed"
    starts = []  # time.monotonic() at each process start (the server records arrivals on the same clock)
    for _ in range(KILLS):
        k = rng.randint(4, 30)  # with this seed: 11, 22, 21, 8, 15 (warm-up, then rounds)
        base = openai_server.count(kind="extract")
        starts.append(time.monotonic())
        p = subprocess.Popen(_cmd(corpus, out, openai_server, cache), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 400
        while p.poll() is None and openai_server.count(kind="extract") - base < k and time.monotonic() < deadline:
            time.sleep(0.002)
        assert p.poll() is None, ("the run ended before its kill", p.returncode, p.stderr.read()[-3000:])
        os.killpg(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL
        p.stderr.close()
        time.sleep(0.5)  # let requests sent just before the kill arrive before the next process starts
    starts.append(time.monotonic())
    r = subprocess.run(_cmd(corpus, out, openai_server, cache), capture_output=True, text=True, timeout=600,
                       start_new_session=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming" in r.stderr

    _same_outputs(clean_dir, out)
    # the server's view: who asked for what, per process (by arrival time)
    seen = [s for s in openai_server.seen[n_clean:] if s.kind == "extract"]
    by_process: list[list[str]] = [[] for _ in starts]
    for s in seen:
        j = max(i for i, t0 in enumerate(starts) if t0 <= s.t)
        by_process[j].append(s.doc)
    per_doc = {}
    for s in seen:
        per_doc[s.doc] = per_doc.get(s.doc, 0) + 1
    assert set(per_doc) == set(clean_per_doc)
    assert all(per_doc[d] <= clean_per_doc[d] + KILLS for d in per_doc), per_doc
    repeats = sum(per_doc.values()) - sum(clean_per_doc.values())
    assert repeats <= CONCURRENCY * KILLS, repeats
    for j in range(KILLS):
        later = {d for docs in by_process[j + 1:] for d in docs}
        again = set(by_process[j]) & later
        print(f"kill {j}: {len(by_process[j])} requests, {len(again)} asked again later")
        # the requests in flight when process j was killed, asked again by a later process: at least the one
        # that had just arrived, never more than could be in flight
        assert 1 <= len(again) <= CONCURRENCY, (j, len(again), len(by_process[j]))
    # the run's view: each kill threw away at most one warm-up batch or one round
    landed = check_no_work_redone(out, clean_work(clean_dir))
    print(f"kills landed in {landed}; {repeats} repeated requests in all")
    assert len(landed) == KILLS and {"warmup", "rounds"} <= set(landed), landed
    procs = work_log(out)
    assert sum(p["extracted"] for p in procs) - clean_work(clean_dir)["extracted"] <= 16 * KILLS
