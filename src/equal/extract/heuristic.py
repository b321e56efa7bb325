"""An extractor that needs no LLM: it finds the QA pairs a document already states.

Rules, tried in order; each pair records the rule that made it:

``qa_marker``
    ``Q:`` / ``A:`` (or ``Question:`` / ``Answer:``) blocks.
``problem_solution``
    A ``Problem``, ``Example``, ``Exercise`` or ``Question`` block followed by a
    ``Solution`` or ``Answer`` block (textbooks, competition problems).
``guided_practice``
    OpenIntro-style "Guided practice:" items whose answer follows in brackets.
``instructions_solution``
    An exercise's ``Instructions`` section paired with its ``Example solution``.
``faq_heading``
    A heading that is itself a question (FAQ pages, question-titled threads),
    paired with the section below it.
``heading_section``
    Only where none of the above fired: each heading with its section; a
    document without heading markup uses its first line or sentence as heading.
    With ``heading_fallback="questions"`` (``extract.heading_fallback``; the
    default ``"section"`` keeps the rule above) only the sections whose heading
    asks something (:func:`equal.hygiene.asks`) are kept, and where none does:
``inline_question``
    (``heading_fallback="questions"`` only) a paragraph of prose ending with a
    question (not a line of quoted dialogue), paired with the paragraph after it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..types import Document, Extraction, QAPair
from .base import cut_text

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^*+#\"'`:.])\1{2,}\s*$")
_QA_Q = re.compile(r"^\s*(?:Q|Question)\s*[:.)]\s*(.*)$", re.I)
_QA_A = re.compile(r"^\s*(?:A|Answer)\s*[:.)]\s*(.*)$", re.I)
_PROBLEM = re.compile(
    r"^\s*(?:#+\s*)?(?:Problem|Example|Exercise|Question|Practice problem|Investigate!?)\b[^\n]{0,80}?[:.]?\s*$", re.I)
_PROBLEM_INLINE = re.compile(r"^\s*(?:Problem|Question)\s*(?:\([^)]{0,80}\))?\s*[:.]\s*(\S.*)$", re.I)
_SOLUTION = re.compile(r"^\s*(?:#+\s*)?(?:Solution|Answer|Hint and solution)s?\b[^\n]{0,40}?[:.]?\s*$", re.I)
_GUIDED = re.compile(r"^\s*Guided practice\s*[:.]?\s*$", re.I)
_INSTRUCTIONS = re.compile(r"^\s*#+\s*Instructions\s*$", re.I)
_EXAMPLE_SOLUTION = re.compile(r"^\s*#+\s*(?:Example|Exemplar|Reference)\s+solution\s*$", re.I)
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class _Section:
    heading: str
    body: str


def _clean(text: str) -> str:
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _sections(lines: list[str]) -> list[_Section]:
    """Split into (heading, body) using Markdown '#' and reST underlined headings."""
    sections: list[_Section] = []
    heading, body = "", []
    i = 0
    fence = ""
    while i < len(lines):
        line = lines[i]
        f = _FENCE.match(line)
        if f and (not fence or f.group(1)[0] == fence[0]):
            fence = "" if fence else f.group(1)
        if fence or f:  # inside a code block: '#' lines are comments, not headings
            body.append(line)
            i += 1
            continue
        m = _MD_HEADING.match(line)
        is_rst = (i + 1 < len(lines) and line.strip() and not _RST_UNDERLINE.match(line)
                  and _RST_UNDERLINE.match(lines[i + 1]) and len(lines[i + 1].strip()) >= min(len(line.strip()), 3))
        if m or is_rst:
            if heading or any(x.strip() for x in body):
                sections.append(_Section(heading, _clean("\n".join(body))))
            heading = m.group(2).strip() if m else line.strip()
            body = []
            i += 1 if m else 2
            continue
        body.append(line)
        i += 1
    if heading or any(x.strip() for x in body):
        sections.append(_Section(heading, _clean("\n".join(body))))
    return sections


class HeuristicExtractor:
    """Rule-based QA extraction. Deterministic and fast; see the module docstring for the rules."""

    name = "heuristic"

    def __init__(self, max_pairs_per_doc: int = 8, min_question_chars: int = 8, min_answer_chars: int = 2,
                 max_answer_chars: int = 4000, heading_fallback: str = "section") -> None:
        if heading_fallback not in ("section", "questions"):
            raise ValueError(f"heading_fallback must be section or questions, got {heading_fallback!r}")
        self.max_pairs = max_pairs_per_doc
        self.min_q = min_question_chars
        self.min_a = min_answer_chars
        self.max_a = max_answer_chars
        self.fallback = heading_fallback

    def fingerprint(self) -> dict:
        fp = {"name": self.name, "version": 1, "max_pairs": self.max_pairs, "min_q": self.min_q,
              "min_a": self.min_a, "max_a": self.max_a}
        if self.fallback != "section":  # the default's fingerprint (and so its cache keys) stays as it was
            fp["fallback"] = self.fallback
        return fp

    def extract(self, docs: list[Document]) -> list[Extraction]:
        out = []
        for doc in docs:
            pairs = self.extract_text(doc.text)
            for p in pairs:
                p.doc_id = doc.id
            out.append(Extraction(pairs=pairs, status="ok" if pairs else "empty"))
        return out

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass

    # ----------------------------------------------------------------- rules
    def extract_text(self, text: str) -> list[QAPair]:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        found: list[QAPair] = []
        for rule in (self._qa_marker, self._problem_solution, self._guided_practice,
                     self._instructions_solution, self._faq_heading):
            found.extend(rule(lines))
        if not found:
            found = self._heading_section(lines) if self.fallback == "section" else self._asked(lines)
        kept, seen = [], set()
        for p in found:
            q, a = _clean(p.question), cut_text(_clean(p.answer), self.max_a)
            if len(q) < self.min_q or len(a) < self.min_a or (q, a) in seen:
                continue
            seen.add((q, a))
            kept.append(QAPair(question=q, answer=a, extractor=self.name, rule=p.rule))
            if len(kept) >= self.max_pairs:
                break
        return kept

    @staticmethod
    def _pair(q: str, a: str, rule: str) -> QAPair:
        return QAPair(question=q, answer=a, rule=rule)

    def _qa_marker(self, lines: list[str]) -> list[QAPair]:
        pairs, q, a, mode = [], [], [], None
        for line in lines + ["Q: "]:
            mq, ma = _QA_Q.match(line), _QA_A.match(line)
            if mq:
                if q and a:
                    pairs.append(self._pair("\n".join(q), "\n".join(a), "qa_marker"))
                q, a, mode = [mq.group(1)], [], "q"
            elif ma and mode == "q":
                a, mode = [ma.group(1)], "a"
            elif mode == "q":
                q.append(line)
            elif mode == "a":
                a.append(line)
        return pairs

    def _problem_solution(self, lines: list[str]) -> list[QAPair]:
        pairs: list[QAPair] = []
        q: list[str] | None = None
        a: list[str] | None = None

        def flush() -> None:
            if q is not None and a is not None:
                pairs.append(self._pair("\n".join(q), "\n".join(a), "problem_solution"))

        for line in lines:
            inline = _PROBLEM_INLINE.match(line)
            if _SOLUTION.match(line) and q is not None:
                if a is None:
                    a = []
                continue
            if _PROBLEM.match(line) or inline:
                flush()
                q, a = ([inline.group(1)] if inline else []), None
                continue
            if _MD_HEADING.match(line) and a is not None:
                flush()
                q, a = None, None
                continue
            if a is not None:
                a.append(line)
            elif q is not None:
                q.append(line)
        flush()
        return pairs

    def _guided_practice(self, lines: list[str]) -> list[QAPair]:
        pairs = []
        text = "\n".join(lines)
        for m in re.finditer(r"(?im)^\s*Guided practice\s*:?\s*(.*?)\{\}\s*\n?\s*\[(.*?)\]\s*(?:\n|$)", text, re.S):
            pairs.append(self._pair(m.group(1), m.group(2), "guided_practice"))
        return pairs

    def _instructions_solution(self, lines: list[str]) -> list[QAPair]:
        start = next((i for i, l in enumerate(lines) if _INSTRUCTIONS.match(l)), None)
        sol = next((i for i, l in enumerate(lines) if _EXAMPLE_SOLUTION.match(l)), None)
        if start is None or sol is None or sol <= start:
            return []
        q = [l for l in lines[start + 1: sol] if not _MD_HEADING.match(l) or "instructions" not in l.lower()]
        end = next((i for i in range(sol + 1, len(lines)) if _MD_HEADING.match(lines[i])), len(lines))
        return [self._pair("\n".join(q), "\n".join(lines[sol + 1: end]), "instructions_solution")]

    def _faq_heading(self, lines: list[str]) -> list[QAPair]:
        return [self._pair(s.heading, s.body, "faq_heading")
                for s in _sections(lines) if s.heading.rstrip().endswith("?") and s.body]

    def _asked(self, lines: list[str]) -> list[QAPair]:
        from ..hygiene import asks

        return [p for p in self._heading_section(lines) if asks(p.question)] or self._inline_questions(lines)

    def _inline_questions(self, lines: list[str]) -> list[QAPair]:
        paras, cur, fence = [], [], False
        for line in lines:
            if _FENCE.match(line):
                fence = not fence
            if not line.strip() and not fence:
                if cur:
                    paras.append("\n".join(cur))
                cur = []
            else:
                cur.append(line)
        if cur:
            paras.append("\n".join(cur))
        pairs = []
        for para, nxt in zip(paras, paras[1:]):
            text = para.strip()
            if not text.rstrip("\"'”’)").endswith("?") or text[:1] in "\"'“‘-–—" or _MD_HEADING.match(text):
                continue
            if nxt.strip().rstrip("\"'”’)").endswith("?"):  # a question after a question: no answer
                continue
            question = text if len(text) <= 300 else _SENTENCE_END.split(text)[-1]
            pairs.append(self._pair(question, nxt, "inline_question"))
        return pairs

    def _heading_section(self, lines: list[str]) -> list[QAPair]:
        sections = [s for s in _sections(lines) if s.body]
        if sections and any(s.heading for s in sections):
            return [self._pair(s.heading, s.body, "heading_section") for s in sections if s.heading]
        text = _clean("\n".join(lines))
        first_line, _, rest = text.partition("\n")
        if rest.strip() and len(first_line) <= 200:
            return [self._pair(first_line, rest, "heading_section")]
        parts = _SENTENCE_END.split(text, maxsplit=1)
        if len(parts) == 2:
            return [self._pair(parts[0], parts[1], "heading_section")]
        return []
