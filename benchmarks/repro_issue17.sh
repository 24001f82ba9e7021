#!/usr/bin/env bash
# Issue 17's reproduction table: each finding's tests run against the code before the fix and against
# this tree, through the same harness (pytest --kb-tree=TREE runs every `kb` and `kb serve` process from
# TREE; the tests marked kb_tree drive only those processes). A test that failed before and passes now
# reproduced its finding.
#
#   benchmarks/repro_issue17.sh                  # 974ff34 (main before the issue-17 merge) vs this tree
#   OLD=974ff34 SLOW=1 benchmarks/repro_issue17.sh   # also the real-model Ctrl-C tests (minutes each)
#
# Writes $OUT/{old,new}.xml (JUnit) and $OUT/table.md, and prints the table. Loopback only; niced.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OLD=${OLD:-974ff34}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${OUT:-$ROOT/benchmarks/out/repro_issue17}
MARK="kb_tree and not slow"
[ "${SLOW:-0}" = 1 ] && MARK="kb_tree"
# TESTS="tests/test_terminal.py" to check a part quickly.
ALL="tests/test_injection.py tests/test_terminal.py tests/test_damaged.py tests/test_odd_paths.py"
ALL+=" tests/test_writers.py tests/test_signals.py tests/test_server_burst.py"
read -r -a TESTS <<<"${TESTS:-$ALL}"

mkdir -p "$OUT"
OLD_TREE=$(mktemp -d /tmp/kb-old-XXXXXX)
rmdir "$OLD_TREE"
git -C "$ROOT" worktree add --detach --quiet "$OLD_TREE" "$OLD"
trap 'git -C "$ROOT" worktree remove --force "$OLD_TREE"' EXIT

run() {  # TREE XML: pytest exits 1 when a test fails, which is the point for the old tree
    (cd "$ROOT" && nice -n 10 "$PYTHON" -m pytest --kb-tree="$1" -m "$MARK" -p no:cacheprovider -q \
        -o junit_family=xunit1 --junitxml="$2" "${TESTS[@]}" >"$2.log" 2>&1) || true
}
run "$OLD_TREE" "$OUT/old.xml"
run "$ROOT" "$OUT/new.xml"

"$PYTHON" - "$OUT/old.xml" "$OUT/new.xml" "$OLD" >"$OUT/table.md" <<'EOF'
"""One row per test: the finding it covers, its result against the old tree and against this one."""
import re
import sys
import xml.etree.ElementTree as ET

FINDINGS = [  # (finding, test-id prefix)
    ("1 injection", "test_injection.py::"),
    ("2 terminal escapes", "test_terminal.py::"),
    ("3 damaged copies", "test_damaged.py::"),
    ("4 read-only media", "test_odd_paths.py::test_a_wal_kb"),
    ("4 read-only media", "test_odd_paths.py::test_an_unreadable_wal"),
    ("5 Ctrl-C", "test_signals.py::test_ctrl_c"),
    ("5 Ctrl-C", "test_signals.py::test_kb_serve_stops"),
    ("6 two writers", "test_writers.py::"),
    ("7 busy server", "test_server_burst.py::"),
    ("7 busy server (port)", "test_signals.py::test_kb_serve_restarts"),
    ("8 FIFO / partial export", "test_odd_paths.py::"),
]


def results(path):
    got = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = (case.get("file") or case.get("classname").split(".")[-1] + ".py").split("/")[-1]
        test = f"{module}::{case.get('name')}"
        outcome, why = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
                why = (node.get("message") or node.text or "").strip()
                break
        got[test] = (outcome, why)
    return got


def reason(text):
    text = re.sub(r"\s+", " ", text.replace("|", "/")).strip()
    return text[:150] + ("…" if len(text) > 150 else "")


old, new = results(sys.argv[1]), results(sys.argv[2])
print(f"| finding | test | old ({sys.argv[3]}) | why it failed there | now |")
print("|---|---|---|---|---|")
tally = {}
for test in sorted(new, key=lambda t: next(i for i, (_, p) in enumerate(FINDINGS) if t.startswith(p))):
    finding = next(f for f, p in FINDINGS if test.startswith(p))
    o, why = old.get(test, ("missing", ""))
    n, _ = new[test]
    print(f"| {finding} | `{test}` | {o} | {reason(why) if o != 'passed' else ''} | {n} |")
    t = tally.setdefault(finding, [0, 0, 0])
    t[0] += 1
    t[1] += o in ("FAILED", "ERROR")
    t[2] += n == "passed"
print()
print("| finding | tests | failed before | pass now |")
print("|---|---|---|---|")
for finding, (count, failed, passed) in tally.items():
    print(f"| {finding} | {count} | {failed} | {passed} |")
EOF
cat "$OUT/table.md"
