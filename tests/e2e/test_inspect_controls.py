"""``equal inspect`` prints documents, which are untrusted: terminal escapes and control characters never
reach the terminal."""

import json
import re
import shutil

import pytest
import yaml

from equal.cli import main
from equal.inspection import printable

# a window-title OSC, colours, an 8-bit CSI "clear screen", a backspace and a bidi override
EVIL = "\x1b]0;pwned title\x07\x1b[31;1mRED\x1b[0m \x9b2J\x08\u202e"
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def test_printable_removes_escape_sequences_and_control_characters():
    assert printable("\x1b[31mred\x1b[0m and \x1b[1;4mbold\x1b[m") == "red and bold"
    assert printable("\x1b]0;set the title\x07after") == "after"
    assert printable("\x1b]8;;https://x.example\x1b\\a link\x1b]8;;\x1b\\") == "a link"  # OSC 8 hyperlink
    assert printable("a\rb\x00c\x7fd\x9b2Je\x1bc") == "abcde"
    assert printable("left \u202eright\u2066") == "left right"
    kept = "tab\there\nnew line, accents é, maths ∑ x², 数学"
    assert printable(kept) == kept


@pytest.mark.slow
def test_inspect_strips_them_from_document_titles(math_cli_run, slice400, tmp_path, capsys):
    run_dir, _ = math_cli_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)  # shared read-only: a copy whose config points at an evil copy of the corpus
    evil = tmp_path / "evil.jsonl"
    with open(slice400, encoding="utf-8") as src, open(evil, "w", encoding="utf-8") as dst:
        for line in src:
            rec = json.loads(line)
            rec["text"] = EVIL + rec["text"]
            dst.write(json.dumps(rec) + "\n")
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    cfg["corpus"] = str(evil)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    for extra in ([], ["--cluster", "0"]):
        assert main(["inspect", str(run), *extra]) == 0
        out = capsys.readouterr().out
        titles = re.findall(r"^  doc:   (.*)$", out, re.M)
        assert titles and all(t.startswith("RED ") for t in titles), titles  # shown, without their escapes
        assert not _CONTROL.search(out), repr(_CONTROL.search(out))
        assert "pwned" not in out
