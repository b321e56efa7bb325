"""Dataset hygiene: exact and near-duplicate QA removal, and decontamination against evaluation sets.

Hygiene decides which pairs of a run's ``dataset.jsonl`` go into an export; it never removes a line from
``dataset.jsonl`` (the complete journal of what was extracted, on which every reward was computed).

* **Exact duplicates**: the same lower-cased ``\\w+`` words in question and answer as an earlier pair.
* **Near duplicates**: Jaccard similarity of the word-shingle sets (``shingle_words`` words) of question +
  answer at or above ``near_threshold`` with an earlier kept pair. Candidates come from MinHash LSH
  (``datasketch``); each candidate is confirmed with the exact Jaccard of the two shingle sets.
* **Decontamination**: a pair whose question or answer shares an ``ngram``-word sequence (lower-cased
  ``\\w+`` words) with a field of any item of a user-given evaluation set is dropped. Evaluation items are
  JSONL records; their ``question``/``answer``, ``prompt``/``output``/``completion``,
  ``instruction``/``input``/``output`` or ``text`` fields are read. A field shorter than ``ngram`` words
  cannot match and is counted as ``eval_fields_too_short``.

* **Quality rules** (``drop_rules``; each rule is the reason in the drop report):

  - ``heading_question``: the question is a bare heading, a macro, a label or a sentence of prose
    (``Practice Problems``, ``\\exercisesheader{}``, ``Exercise 3.2``, a novel's first line), not a question,
    a problem or an instruction. A question passes when it holds a ``?``, or when one of its sentences opens
    with a question or instruction word (``what``, ``how``, ``find``, ``prove``, ``write``, ...;
    :data:`OPENERS`: "Two dice are rolled. Find ...") and it is not capitalised like a title;
  - ``heading_answer``: every line of the answer is a heading (Markdown ``#`` or a reST underline);
  - ``link_answer``: the answer is only links (Markdown links or URLs, as a list or not);
  - ``short``: fewer than ``min_question_words`` words in the question or ``min_answer_words`` in the answer.

  Words are counted with LaTeX macros (``\\frac``), markup and URLs left out.

Pairs are checked in ``dataset.jsonl`` order; decontamination first, then the quality rules, then deduplication
among the pairs left, so a duplicate always points at a pair that is kept.
"""

from __future__ import annotations

from .errors import UserError

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import DROP_RULES, HygieneConfig
from .io import atomic_write_bytes, read_jsonl

WORD = re.compile(r"\w+")
EVAL_FIELDS = ("question", "answer", "prompt", "output", "completion", "instruction", "input", "text", "response")
REASONS = ("contaminated", *DROP_RULES, "exact_duplicate", "near_duplicate")
QUALITY_REASONS = DROP_RULES
# a question opening with one of these is a question or an instruction (lower-cased first word)
OPENERS = frozenset("""
what what's whats why how how's when where which who whom whose whether is are was were am do does did can could
should would will shall may might must has have had
find compute calculate solve prove show determine evaluate simplify write explain describe list give state define
derive estimate express factor factorise factorize graph sketch identify let suppose given consider use convert
implement create build design make compare contrast name classify rewrite translate summarize summarise discuss
verify check test fix debug refactor complete fill choose select match sort count plot draw construct justify
predict analyze analyse interpret expand differentiate integrate approximate round multiply divide add subtract
apply assume imagine decide enter recite tell provide outline illustrate demonstrate measure convince help please
""".split())
_MACRO = re.compile(r"\\(?:[A-Za-z]+\*?|.)")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)]*)\)")
_HEADING_LINE = re.compile(r"^\s*#{1,6}\s+\S")
_UNDERLINE = re.compile(r"^\s*([=\-~^*+#\"'`:.])\1{2,}\s*$")
# a sentence may end inside math ("... 2004.$  Compute ...") or with display math ("... = 42.\\]Compute ...")
_SENTENCE = re.compile(r"[.!;:][$)\]]*\s+|\\\]\s*|\$\$\s*|\n+")
# a question or an instruction inside a clause ("If $x = 2$, find $y$.", "Using Figure 1, estimate ...")
_CLAUSE_ASK = re.compile(r"(?:[,;]|\bthen\b)\s*(?:then\s+)?(?:how|what|why|find|compute|calculate|determine|"
                         r"prove|show|solve|evaluate|simplify|express|enter|estimate|give|write|say|list|explain|"
                         r"describe)\b", re.I)
_TASK = re.compile(r"\byour task is\b|\byou (?:need|have|are asked|will need) to\b|\bin this exercise\b", re.I)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")


class HygieneError(UserError, ValueError):
    """An evaluation set cannot be read (a user error: one line, no traceback)."""


def words(text: str) -> list[str]:
    """Lower-cased ``\\w+`` tokens."""
    return WORD.findall(text.lower())


def _ngram_key(toks: Sequence[str]) -> bytes:
    return hashlib.blake2b(" ".join(toks).encode("utf-8"), digest_size=8).digest()


def ngram_keys(toks: Sequence[str], n: int) -> Iterable[bytes]:
    for i in range(len(toks) - n + 1):
        yield _ngram_key(toks[i: i + n])


@dataclass
class EvalIndex:
    """Every ``n``-word sequence of the evaluation items, mapped to its first (file, line) for the drop report."""

    n: int
    grams: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)  # file names (no folder: reports carry no local path)
    sha256: list[str] = field(default_factory=list)  # each file's content hash
    items: list[int] = field(default_factory=list)
    too_short: int = 0

    @classmethod
    def build(cls, paths: Iterable[str | Path], n: int) -> "EvalIndex":
        idx = cls(n)
        for path in paths:
            path = Path(path)
            if not path.is_file():
                raise HygieneError(f"evaluation set not found: {path}")
            f_no, count = len(idx.files), 0
            idx.files.append(path.name)
            idx.sha256.append(hashlib.sha256(path.read_bytes()).hexdigest())
            with open(path, encoding="utf-8", errors="replace") as f:
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        raise HygieneError(f"evaluation set {path}, line {line_no}: not valid JSON") from None
                    texts = [rec[k] for k in EVAL_FIELDS if isinstance(rec, dict) and isinstance(rec.get(k), str)]
                    if not texts:
                        raise HygieneError(f"evaluation set {path}, line {line_no}: no text field "
                                           f"(one of {', '.join(EVAL_FIELDS)})")
                    count += 1
                    for text in texts:
                        toks = words(text)
                        if len(toks) < n:
                            idx.too_short += 1
                        for key in ngram_keys(toks, n):
                            idx.grams.setdefault(key, (f_no, line_no))
            idx.items.append(count)
        return idx

    def match(self, text: str) -> tuple[int, int, str] | None:
        """The first n-gram of ``text`` found in an evaluation item: (file index, line, the words); else None."""
        toks = words(text)
        for i in range(len(toks) - self.n + 1):
            hit = self.grams.get(_ngram_key(toks[i: i + self.n]))
            if hit is not None:
                return hit[0], hit[1], " ".join(toks[i: i + self.n])
        return None


def plain_words(text: str) -> list[str]:
    """The words of ``text`` with LaTeX macros, Markdown links' targets, URLs and markup left out."""
    text = _MD_LINK.sub(r"\1", _URL.sub(" ", text))
    return WORD.findall(_MACRO.sub(" ", text).replace("_", " "))


def _title_case(toks: list[str]) -> bool:
    """A heading's capitalisation: every word of more than three letters capitalised (``Practice Problems``)."""
    long = [t for t in toks if len(t) > 3 and t.isalpha()]
    return len(long) >= 2 and all(t[0].isupper() and t[1:].islower() for t in long)


def asks(question: str, q_words: list[str] | None = None) -> bool:
    """Whether ``question`` asks something: it holds a ``?``, or one of its sentences (or lines) opens with a
    question or instruction word (:data:`OPENERS`) and it is not capitalised like a heading."""
    if "?" in question:
        return True
    if _title_case(plain_words(question) if q_words is None else q_words):
        return False
    if _TASK.search(question) or _CLAUSE_ASK.search(_MACRO.sub(" ", question)):
        return True
    for sentence in _SENTENCE.split(question):
        toks = plain_words(sentence)
        if toks and toks[0].lower() in OPENERS:
            return True
    return False


def _is_link_line(line: str) -> bool:
    line = _BULLET.sub("", line).strip()
    if not (_MD_LINK.search(line) or _URL.search(line)):
        return False
    rest = _URL.sub(" ", _MD_LINK.sub(" ", line))
    return len(WORD.findall(rest)) <= 3  # a link with at most a short label around it


def quality_reason(question: str, answer: str, cfg: HygieneConfig) -> str | None:
    """The first of ``cfg.drop_rules`` that ``(question, answer)`` breaks, or None when it passes them all."""
    rules = cfg.drop_rules
    q_words = plain_words(question)
    if "heading_question" in rules and not asks(question, q_words):
        return "heading_question"
    lines = [ln for ln in answer.splitlines() if ln.strip()]
    if "heading_answer" in rules and lines and all(_HEADING_LINE.match(ln) or _UNDERLINE.match(ln) or
                                                   (i + 1 < len(lines) and _UNDERLINE.match(lines[i + 1]))
                                                   for i, ln in enumerate(lines)):
        return "heading_answer"
    if "link_answer" in rules and lines and all(_is_link_line(ln) for ln in lines):
        return "link_answer"
    if "short" in rules and (len(q_words) < cfg.min_question_words or len(plain_words(answer)) < cfg.min_answer_words):
        return "short"
    return None


@dataclass
class HygieneResult:
    """Which pairs pass: ``keep`` (indices into the pairs, in order) and one record per dropped pair."""

    keep: list[int]
    dropped: list[dict[str, Any]]
    counts: dict[str, Any]


def _shingles(toks: list[str], k: int) -> set[str]:
    if len(toks) <= k:
        return {" ".join(toks)}
    return {" ".join(toks[i: i + k]) for i in range(len(toks) - k + 1)}


def apply_hygiene(pairs: Sequence[dict[str, Any]], cfg: HygieneConfig,
                  extra_decontaminate: Iterable[str | Path] = ()) -> HygieneResult:
    """Decide which ``pairs`` (records with ``question`` and ``answer``) pass ``cfg``'s hygiene."""
    paths = list(dict.fromkeys([*cfg.decontaminate, *map(str, extra_decontaminate)]))
    counts: dict[str, Any] = {"enabled": cfg.enabled, "pairs": len(pairs), **{r: 0 for r in REASONS}}
    if not cfg.enabled:
        counts["kept"] = len(pairs)
        return HygieneResult(list(range(len(pairs))), [], counts)
    dropped: list[dict[str, Any]] = []
    alive = list(range(len(pairs)))
    if paths:
        index = EvalIndex.build(paths, cfg.ngram)
        counts["decontaminate"] = {"files": index.files, "sha256": index.sha256, "items": index.items,
                                   "ngram": cfg.ngram, "eval_fields_too_short": index.too_short}
        left = []
        for i in alive:
            hit = None
            for part in ("question", "answer"):
                hit = index.match(str(pairs[i].get(part, "")))
                if hit is not None:
                    dropped.append({"index": i, "reason": "contaminated", "field": part, "eval_file": index.files[hit[0]],
                                    "eval_line": hit[1], "ngram": hit[2]})
                    break
            if hit is None:
                left.append(i)
        alive = left
    if cfg.drop_rules:
        left = []
        for i in alive:
            reason = quality_reason(str(pairs[i].get("question", "")), str(pairs[i].get("answer", "")), cfg)
            if reason is None:
                left.append(i)
            else:
                dropped.append({"index": i, "reason": reason})
        alive = left
    if cfg.dedup or cfg.near_dedup:
        alive = _dedup(pairs, alive, cfg, dropped)
    for d in dropped:
        counts[d["reason"]] += 1
    counts["low_quality"] = sum(counts[r] for r in QUALITY_REASONS)
    counts["kept"] = len(alive)
    dropped.sort(key=lambda d: d["index"])
    return HygieneResult(alive, dropped, counts)


def _dedup(pairs: Sequence[dict[str, Any]], alive: list[int], cfg: HygieneConfig,
           dropped: list[dict[str, Any]]) -> list[int]:
    from datasketch import MinHash, MinHashLSH

    toks = {i: words(f"{pairs[i].get('question', '')}\n{pairs[i].get('answer', '')}") for i in alive}
    exact: dict[tuple[str, ...], int] = {}
    left = []
    for i in alive:
        key = tuple(toks[i])
        if cfg.dedup and key in exact:
            dropped.append({"index": i, "reason": "exact_duplicate", "duplicate_of": exact[key]})
            continue
        exact.setdefault(key, i)
        left.append(i)
    if not cfg.near_dedup or len(left) < 2:
        return left
    shingles = {i: _shingles(toks[i], cfg.shingle_words) for i in left}
    hashes = MinHash.bulk([[s.encode("utf-8") for s in shingles[i]] for i in left], num_perm=cfg.num_perm, seed=1)
    # candidates at a lower threshold and recall-weighted bands, so that pairs just above near_threshold are
    # found; each candidate is then confirmed with the exact Jaccard of the shingle sets
    lsh = MinHashLSH(threshold=max(0.05, cfg.near_threshold - 0.15), num_perm=cfg.num_perm, weights=(0.1, 0.9))
    kept = []
    for i, mh in zip(left, hashes):
        best, best_j = 0.0, -1
        for j in lsh.query(mh):
            a, b = shingles[i], shingles[j]
            jac = len(a & b) / len(a | b)
            if jac > best:
                best, best_j = jac, j
        if best >= cfg.near_threshold:
            dropped.append({"index": i, "reason": "near_duplicate", "duplicate_of": best_j, "jaccard": round(best, 4)})
            continue
        lsh.insert(i, mh)
        kept.append(i)
    return kept


def drop_report_lines(pairs: Sequence[dict[str, Any]], result: HygieneResult) -> bytes:
    """The drop report as JSONL bytes: per dropped pair, its line in dataset.jsonl (from 1), why, and the pair."""
    out = []
    for d in result.dropped:
        p = pairs[d["index"]]
        rec = {"line": d["index"] + 1, **{k: v for k, v in d.items() if k != "index"}}
        if "duplicate_of" in rec:
            rec["duplicate_of_line"] = rec.pop("duplicate_of") + 1
        rec.update(question=p.get("question"), answer=p.get("answer"), doc_id=p.get("doc_id"))
        out.append(json.dumps(rec, ensure_ascii=False))
    return ("\n".join(out) + "\n" if out else "").encode("utf-8")


def run_hygiene(run_dir: str | Path, cfg: HygieneConfig, extra_decontaminate: Iterable[str | Path] = (),
                report_name: str = "hygiene_dropped.jsonl") -> tuple[list[dict[str, Any]], HygieneResult]:
    """Hygiene over a run folder's ``dataset.jsonl``; writes the drop report ``report_name`` into the folder
    (atomically). Returns the pairs and the result; ``result.counts["report"]`` names the report file."""
    run_dir = Path(run_dir)
    pairs = list(read_jsonl(run_dir / "dataset.jsonl"))
    result = apply_hygiene(pairs, cfg, extra_decontaminate)
    atomic_write_bytes(run_dir / report_name, drop_report_lines(pairs, result))
    result.counts["report"] = report_name
    return pairs, result



def run_summary(run_dir: str | Path, cfg: HygieneConfig) -> dict[str, Any]:
    """Hygiene counts for ``summary.json`` at the end of a run (the drop report written beside it). An
    evaluation set that cannot be read is recorded as an error instead of failing the finished run."""
    try:
        return run_hygiene(run_dir, cfg)[1].counts
    except HygieneError as e:
        return {"enabled": cfg.enabled, "error": str(e)}
