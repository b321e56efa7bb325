"""The run report through the command line: ``report.md`` after a run, its images, and ``equal report``.

Only the run folder's files and the CLI are used (no internals).
"""

import re
import shutil
from pathlib import Path

import pytest

from conftest import equal_cli

pytestmark = pytest.mark.slow

# ![alt](path) and <img src="path">
_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|<img[^>]*\bsrc=[\"']([^\"']+)[\"']")


def linked_images(report: Path) -> list[Path]:
    """The local images ``report.md`` links to, as paths."""
    text = report.read_text(encoding="utf-8")
    targets = [a or b for a, b in _IMAGE.findall(text)]
    return [report.parent / t for t in targets if not re.match(r"^[a-z]+://", t)]


def check_images(run_dir: Path) -> list[Path]:
    from PIL import Image

    images = linked_images(run_dir / "report.md")
    assert images, "report.md links no image"
    for p in images:
        assert p.is_file(), f"report.md links {p.relative_to(run_dir)}, which does not exist"
        with Image.open(p) as im:
            im.verify()  # a real, complete image file
        with Image.open(p) as im:
            assert im.size[0] > 50 and im.size[1] > 50, (p, im.size)
    return images


@pytest.fixture(scope="module")
def run_copy(math_cli_run, tmp_path_factory):
    out, r = math_cli_run
    copy = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(out, copy)
    return copy, r


def test_run_writes_a_report_whose_images_exist_and_open(run_copy):
    run_dir, r = run_copy
    report = run_dir / "report.md"
    assert report.is_file()
    assert "report:" in r.stdout  # the run says where the report is
    images = check_images(run_dir)
    assert len(set(images)) == len(images)


def test_equal_report_rebuilds_the_report_and_its_images(run_copy):
    run_dir, _ = run_copy
    report = run_dir / "report.md"
    before_text = report.read_text(encoding="utf-8")
    images = linked_images(report)
    report.unlink()
    (run_dir / "report.html").unlink()
    for p in images:
        p.unlink()
    r = equal_cli("report", run_dir, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert report.is_file()
    assert (run_dir / "report.html").is_file()  # the self-contained page too (tests/e2e/test_report_html.py)
    assert str(report) in r.stdout  # it prints where the report is
    rebuilt = check_images(run_dir)
    assert sorted(rebuilt) == sorted(images)  # the same images, written again
    # the same numbers: the report is a function of the run folder's files
    assert report.read_text(encoding="utf-8") == before_text


def test_equal_report_on_a_folder_without_a_run_is_a_one_line_error(tmp_path):
    r = equal_cli("report", tmp_path, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "report.md").exists()
