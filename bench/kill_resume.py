#!/usr/bin/env python3
"""What SIGKILLs cost a run: kills at fixed shares of a clean run's duration, each restart resuming the last.

With the default config (heuristic extractor, ``--set embed.cache=false``) on the first ``--docs`` documents
of the shared corpus: one clean run, timed (T); then the same command in another run folder, started again
after each SIGKILL of its process group at 5, 15, 25, 35, 50, 65, 80 and 95% of T (moments on the killed
series' own clock, restarts included), and run to the end after the last. The clean and the killed run use
separate caches (``XDG_CACHE_HOME``), so nothing is shared between them.

Checks: ``dataset.jsonl``, ``rounds.jsonl`` and ``extracted.jsonl`` identical to the clean run; at least 4
kills landed (a kill lands when the process was still running); total time of the killed series at most
1.5 T + min(15 s, 10% of T) per landed kill + 10 s, printed as a ratio (<= 1 passes). Also prints, per
kill, the stage it landed in and the work it threw away (from the run's work log, ``state/work.jsonl``).

    nice -n 15 .venv/bin/python bench/kill_resume.py [--docs 3000] [--workdir DIR] [--json out.json]

Exit status 0 when every check passes, 1 otherwise. Takes about 2.5 T (15+ minutes for 3,000 documents on
a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EQUAL_SHARED_DATA") or ROOT.parent / "shared" / "data")
FRACTIONS = (0.05, 0.15, 0.25, 0.35, 0.50, 0.65, 0.80, 0.95)
OUTPUTS = ("dataset.jsonl", "rounds.jsonl", "extracted.jsonl")


def write_slice(src: Path, dst: Path, n: int) -> int:
    count = 0
    with open(src, "rb") as f, open(dst, "wb") as g:
        for line in f:
            if count >= n:
                break
            g.write(line)
            count += 1
    return count


def command(corpus: Path, reference: Path, out: Path, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "equal.cli", "run", "--corpus", str(corpus), "--reference", str(reference),
            "--out", str(out), "--set", "embed.cache=false", "-q", *extra]


def env_for(cache: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=3000, help="Documents of the shared corpus to use (from the top).")
    ap.add_argument("--reference", default=str(DATA / "reference_math.jsonl"))
    ap.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                    help="Kill moments as shares of the clean run's duration.")
    ap.add_argument("--workdir", default=None, help="Folder for the slice, runs and caches (default: a temp folder).")
    ap.add_argument("--json", default=None, help="Also write the figures to this file.")
    ap.add_argument("extra", nargs="*", help="More arguments for 'equal run' (after --), e.g. --set k=v.")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from equal.run import WORK_KINDS, work_log

    work = Path(args.workdir or tempfile.mkdtemp(prefix="equal-kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    n = write_slice(DATA / "corpus.jsonl", corpus, args.docs)
    reference = Path(args.reference)
    print(f"{n} documents from {DATA / 'corpus.jsonl'}; work folder {work}", flush=True)

    clean_out, killed_out = work / "clean", work / "killed"
    for d in (clean_out, killed_out):
        if d.exists():
            raise SystemExit(f"{d} exists: use a fresh --workdir")
    t0 = time.monotonic()
    r = subprocess.run(command(corpus, reference, clean_out, args.extra), env=env_for(work / "cache-clean"),
                       capture_output=True, text=True, start_new_session=True)
    clean_s = time.monotonic() - t0
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        return 1
    print(f"clean run: {clean_s:.1f} s", flush=True)

    # the killed series: one clock from its first start; each kill at its moment, restart at once
    moments = sorted(f * clean_s for f in args.fractions)
    env = env_for(work / "cache-killed")
    cmd = command(corpus, reference, killed_out, args.extra)
    start = time.monotonic()
    landed: list[float] = []
    rc = None
    for m in moments:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        wait = start + m - time.monotonic()
        try:
            rc = p.wait(timeout=max(0.0, wait))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
            landed.append(m / clean_s)
        err = p.stderr.read() if p.stderr else ""
        if p.stderr:
            p.stderr.close()
        if rc == 0:
            break  # finished before this moment: no more kills can land
        if rc != -signal.SIGKILL:
            print(err[-3000:], file=sys.stderr)
            return 1
    if rc != 0:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, start_new_session=True)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
    total_s = time.monotonic() - start

    same = {name: (clean_out / name).read_bytes() == (killed_out / name).read_bytes() for name in OUTPUTS}
    per_kill = min(15.0, 0.1 * clean_s)
    bound = 1.5 * clean_s + per_kill * len(landed) + 10.0
    ratio = total_s / bound
    procs = work_log(killed_out)
    clean_work = work_log(clean_out)[0]
    rows = []
    for a, b in zip(procs, procs[1:]):
        waste = {k: a[k] - (b["committed"][k] - a["committed"][k]) for k in WORK_KINDS}
        rows.append({"process": a["process"], "stage": a["stages"][-1] if a["stages"] else "start-up",
                     "thrown_away": waste})
    print(f"kills landed: {len(landed)} of {len(moments)} (at {', '.join(f'{f:.0%}' for f in landed)})")
    for row in rows:
        w = ", ".join(f"{k} {v}" for k, v in row["thrown_away"].items() if v)
        print(f"  process {row['process']}: killed in {row['stage']}; thrown away: {w or 'nothing'}")
    print(f"work: clean {({k: clean_work[k] for k in WORK_KINDS})}; killed series "
          f"{({k: sum(p[k] for p in procs) for k in WORK_KINDS})}")
    print(f"outputs identical: {same}")
    print(f"clean {clean_s:.1f} s; killed series {total_s:.1f} s ({len(procs)} processes); "
          f"bound 1.5 x {clean_s:.1f} + {len(landed)} x {per_kill:.1f} + 10 = {bound:.1f} s; ratio {ratio:.2f}")
    ok = all(same.values()) and len(landed) >= 4 and ratio <= 1.0
    print("PASS" if ok else "FAIL")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "docs": n, "clean_s": clean_s, "killed_total_s": total_s, "kills_landed": len(landed),
            "landed_at": landed, "bound_s": bound, "ratio": ratio, "identical": same, "kills": rows,
            "processes": len(procs), "ok": ok}, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
