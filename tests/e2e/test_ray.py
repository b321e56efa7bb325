"""The Ray executor (``executor: ray``) gives the local executor's results bit for bit, on a local Ray.

Needs ``pip install 'equal[ray]'`` (``make setup`` installs it); skipped otherwise, with the reason, and
failed when the environment variable ``CI`` is set (a CI without Ray is a broken set-up, not a reason to
pass). A local Ray with 2 CPUs, 240 documents, the heuristic extractor, k = 4: about 4 minutes on two
shared cores (starting Ray and its workers is most of the Ray side's time).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time

import numpy as np
import pytest

from conftest import CLI_FAST, REF_MATH, equal_cli, in_ci, write_slice

pytestmark = [pytest.mark.ray, pytest.mark.needs_data]


def _missing() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed: pip install 'equal[ray]'"
    try:
        import ray.data  # noqa: F401
    except Exception as e:  # noqa: BLE001 - ImportError, or a Ray that fails to load
        return f"ray.data is not importable ({type(e).__name__}: {e}); pip install 'equal[ray]'"
    return None


_REASON = _missing()


@pytest.fixture(scope="module", autouse=True)
def ray_installed():
    """Skip (fail when CI is set) every test of this module when Ray cannot be imported."""
    if _REASON:
        if in_ci():
            pytest.fail(f"{_REASON} (CI is set: the Ray tests must run there; `make setup` installs the ray "
                        f"extra)", pytrace=False)
        pytest.skip(_REASON)


N = 240  # documents of the slice every test here uses


@pytest.fixture(scope="module")
def slice240(tmp_path_factory):
    return write_slice(tmp_path_factory.mktemp("ray-data") / "slice240.jsonl", N)


@pytest.fixture(scope="module")
def ray_executor(ray_installed):
    """A RayExecutor on a local Ray started here with ray.init(num_cpus=2)."""
    import ray

    from equal import Config
    from equal.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False)
    messages: list[str] = []
    ex = RayExecutor(Config().replace(executor="ray"), say=messages.append)
    ex.messages = messages
    try:
        yield ex
    finally:
        ex.close()  # started by the fixture, not by the executor: left running by close
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus240(slice240):
    from equal.corpus import Corpus

    return Corpus(slice240)


# ---------------------------------------------------------------- the executor's operations, one by one
def test_ray_embedding_is_bit_identical_and_resumes_across_executors(ray_executor, corpus240, embedder, tmp_path):
    from equal.embed import embed_to_memmap
    from equal.executors import LocalExecutor

    assert LocalExecutor().encode_blocks(corpus240, embedder) is None  # the local path encodes itself
    n, dim, block, chunk = len(corpus240), embedder.dim, 32, 64

    def texts(a, b):
        return [d.text for d in corpus240.get(range(a, b))]

    local = np.array(embed_to_memmap(tmp_path / "local.npy", n, dim, texts, embedder.encode, chunk=chunk,
                                     progress=False, key={"k": 1}, block=block))
    remote = ray_executor.encode_blocks(corpus240, embedder)
    ray_vecs = np.array(embed_to_memmap(tmp_path / "ray.npy", n, dim, texts, _never, chunk=chunk, progress=False,
                                        key={"k": 1}, block=block, encode_blocks=remote))
    assert ray_vecs.shape == (n, dim) and np.abs(ray_vecs).sum() > 0
    assert ray_vecs.tobytes() == local.tobytes()
    assert any(m.startswith(f"ray: embedding {N} documents (8 blocks)") for m in ray_executor.messages)

    # interrupted after its second chunk on Ray, resumed here (and the other way round): the same file
    class Stop(Exception):
        pass

    def stop_after(k):
        seen = []

        def on_chunk(start, stop):
            seen.append(stop)
            if len(seen) == k:
                raise Stop
        return on_chunk

    with pytest.raises(Stop):
        embed_to_memmap(tmp_path / "mixed.npy", n, dim, texts, _never, chunk=chunk, progress=False, key={"k": 1},
                        block=block, on_chunk=stop_after(2), encode_blocks=remote)
    prog = json.loads((tmp_path / "mixed.npy.progress.json").read_text())
    assert prog["rows"] == 2 * chunk
    mixed = np.array(embed_to_memmap(tmp_path / "mixed.npy", n, dim, texts, embedder.encode, chunk=chunk,
                                     progress=False, key={"k": 1}, block=block))
    assert mixed.tobytes() == local.tobytes()

    with pytest.raises(Stop):
        embed_to_memmap(tmp_path / "mixed2.npy", n, dim, texts, embedder.encode, chunk=chunk, progress=False,
                        key={"k": 1}, block=block, on_chunk=stop_after(1))
    mixed2 = np.array(embed_to_memmap(tmp_path / "mixed2.npy", n, dim, texts, _never, chunk=chunk, progress=False,
                                      key={"k": 1}, block=block, encode_blocks=remote))
    assert mixed2.tobytes() == local.tobytes()


def _never(texts):
    raise AssertionError("the driver encoded corpus texts although Ray was to")


def test_ray_assignment_matches_local_chunk_for_chunk(ray_executor, tmp_path):
    from equal.cluster import assign, kmeans

    rng = np.random.default_rng(5)
    x = rng.standard_normal((1000, 16)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    v = np.load(tmp_path / "v.npy", mmap_mode="r")
    centroids = rng.standard_normal((7, 16)).astype(np.float32)
    labels, inertia = assign(v, centroids, 128)
    r_labels, r_inertia = ray_executor.assign(v, centroids, 128)
    assert r_labels.dtype == np.int32 and len(np.unique(r_labels)) > 1
    assert r_labels.tobytes() == labels.tobytes()
    assert r_inertia == inertia
    assert any(m.startswith("ray: assigning 1000 vectors to 7 centroids (8 chunks)") for m in ray_executor.messages)
    # through kmeans: the same clustering whichever executor assigns
    a = kmeans(v, 5, niter=10, seed=1, chunk=300)
    b = kmeans(v, 5, niter=10, seed=1, chunk=300, assign_fn=ray_executor.assign)
    assert a.labels.tobytes() == b.labels.tobytes() and a.inertia == b.inertia
    assert a.centroids.tobytes() == b.centroids.tobytes()


def test_ray_extraction_matches_local(ray_executor, corpus240, embedder):
    from equal.executors import LocalExecutor
    from equal.extract.registry import make_extractor

    emb = embedder
    rows = np.random.default_rng(3).choice(len(corpus240), 120, replace=False)
    # the workers build their extractor from the config (the default's quality rules included); so does the driver
    ex = make_extractor(ray_executor.cfg.extract)
    local = list(LocalExecutor().extract(corpus240, rows, 25, ex, emb))
    remote = list(ray_executor.extract(corpus240, rows, 25, ex, emb))
    assert [len(p.result) for p in remote] == [25, 25, 25, 25, 20]
    assert sum(int(p.result.n_pairs.sum()) for p in local) > 0  # the slice holds documents with pairs
    for a, b in zip(local, remote, strict=True):
        assert a.result.rows.tolist() == b.result.rows.tolist()
        assert a.result.doc_ids == b.result.doc_ids and a.result.status == b.result.status
        assert a.result.n_pairs.tolist() == b.result.n_pairs.tolist()
        assert [[p.to_record() for p in ps] for ps in a.result.pairs] == \
               [[p.to_record() for p in ps] for ps in b.result.pairs]
        assert a.result.vectors.tobytes() == b.result.vectors.tobytes()
        assert [o.status for o in a.outcomes] == [o.status for o in b.outcomes]


# ---------------------------------------------------------------- a whole run, through the command line
def _run(corpus, out, executor, *extra):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray, never someone's cluster
    args = ["run", "--corpus", corpus, "--reference", REF_MATH, "--out", out, "--budget", "0.25", "--clusters", "4",
            *CLI_FAST, "--set", "embed.cache=false", "--set", "embed.chunk_docs=64", "--executor", executor,
            "--set", "embed.max_seq_length=64", "--set", "score.prior_sample=100",
            "--set", "ray.num_cpus=2", "--set", "ray.min_extract_docs=0", *extra]
    t = time.perf_counter()
    r = equal_cli(*args, env=env, timeout=1200)
    assert r.returncode == 0, r.stderr[-4000:]
    return r, time.perf_counter() - t


def test_ray_run_is_byte_identical_to_local(slice240, tmp_path, record_property):
    local, t_local = _run(slice240, tmp_path / "local", "local")
    ray_run, t_ray = _run(slice240, tmp_path / "ray", "ray")
    record_property("wall_seconds", {"local": round(t_local, 1), "ray": round(t_ray, 1)})
    print(f"\nwall time on {N} documents: local {t_local:.1f} s, ray {t_ray:.1f} s")
    # Ray did the per-document work: the corpus embedding, the warm-up extraction and the assignment
    err = ray_run.stderr
    assert "ray: started a local Ray (2 CPUs)" in err
    assert f"ray: embedding {N} documents" in err
    assert "ray: extracting 30 documents" in err  # the warm-up: half of a 25% budget of 240
    assert f"ray: assigning {N} vectors to 4 centroids" in err
    assert "ray:" not in local.stderr
    a, b = tmp_path / "local", tmp_path / "ray"
    for name in ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "dataset.jsonl").stat().st_size > 0 and len((a / "rounds.jsonl").read_text().splitlines()) >= 3
    assert np.load(a / "state" / "doc_vectors.npy").tobytes() == np.load(b / "state" / "doc_vectors.npy").tobytes()
    za, zb = np.load(a / "state" / "clusters.npz"), np.load(b / "state" / "clusters.npz")
    assert za["labels"].tobytes() == zb["labels"].tobytes() and float(za["inertia"]) == float(zb["inertia"])
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["final_ot"] == sb["final_ot"] and sa["extraction"] == sb["extraction"]
    assert sb["config"]["executor"] == "ray"
    # the work log counts the corpus embedding and the warm-up the Ray workers did
    work_b = sb["work"][0]
    assert work_b["embedded"] == N and work_b["extracted"] == sa["work"][0]["extracted"]


def test_ray_extract_all_table_is_byte_identical(ray_executor, slice240, tmp_path):
    from equal import Config
    from equal.experiments.table import ExtractionTable, extract_all

    cfg = Config(corpus=str(slice240)).replace(**{"embed.max_seq_length": 64, "extract.batch_docs": 50})
    n_msgs = len(ray_executor.messages)
    local = extract_all(cfg, tmp_path / "local", progress=False, say=lambda m: None)
    said: list[str] = []
    remote = extract_all(cfg.replace(executor="ray"), tmp_path / "ray", progress=False, say=said.append)
    assert any(m.startswith(f"ray: extracting {N} documents (5 batches)") for m in said), said
    assert len(ray_executor.messages) == n_msgs  # a new executor on the running Ray, not the fixture's
    for name in ("docs.jsonl", "vectors.f32", "progress.json"):
        assert (local / name).read_bytes() == (remote / name).read_bytes(), name
    t = ExtractionTable.load(remote)
    assert len(t) == N and int(t.n_pairs.sum()) > 0
