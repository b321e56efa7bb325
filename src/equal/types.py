"""Small typed values that the stages pass to each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """One corpus document. ``index`` is its position among the corpus's valid documents."""

    index: int
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class QAPair:
    """A question-answer pair with its provenance."""

    question: str
    answer: str
    doc_id: str = ""
    cluster: int = -1
    round: int = 0
    extractor: str = ""
    rule: str = ""

    def text(self) -> str:
        """The text embedded for scoring: question and answer together."""
        return f"{self.question}\n{self.answer}"

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["rule"]:
            d.pop("rule")
        return d


@dataclass
class RoundRecord:
    """One bandit pull, as written to ``rounds.jsonl``."""

    round: int
    cluster: int
    doc_ids: list[str]
    n_pairs: int
    reward: float
    score: float
    pulls: int

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Extraction:
    """What an extractor returns for one document: pairs, or the reason it gave none."""

    pairs: list[QAPair]
    status: str = "ok"  # ok | empty | failed
    reason: str = ""
    cached: bool = False
    stats: dict[str, int] = field(default_factory=dict)
