"""Agreement with Math-Verify's own test suite, measured from outside: its parametrized cases, read from a checkout.

    git clone https://github.com/huggingface/Math-Verify /tmp/Math-Verify   # any checkout; nothing is copied
    .venv/bin/python benchmarks/math_verify_suite.py --tests_dir /tmp/Math-Verify/tests [--show 40]

Reads every `@pytest.mark.parametrize` table of (gold, pred, expected) in the checkout's test files with `ast` (no
test code runs) and keeps the default-setting cases: tables whose test passes no `precision`, `strict` or
`allow_set_relation_comp` of its own (rows with a `precision` column only where it is Math-Verify's default, 6).
Each case goes through this project's full path, extraction included: the reference is the gold text's final answer
(`extract_answer`, or the gold text itself when it has none) and the verdict is `grade(pred, reference)`. Prints the
agreement with the expected verdicts, overall and by test table, how many disagreements are listed as deliberate
(DELIBERATE below, each with its reason), and the cases it disagrees on.
"""
import argparse
import ast
import pathlib
import time

from mathft_jax.grading import extract_answer, grade

# (gold, pred) -> why the project's verdict differs on purpose. Keep the reasons next to the grading docstring's
# strictness rules (mathft_jax/grading/__init__.py).
_OPEN_INLINE = ("a number in free text is read even inside an inline-math delimiter left open across lines "
                "(Math-Verify finds no answer there)")
_WORDS_BETWEEN_BOXES = ("boxes join across separators and 'and' only: words between them ('first \\boxed{1} then "
                        "\\boxed{2}', 'for part (a)') make the last box the answer")
DELIBERATE: dict[tuple[str, str], str] = {
    ("$9$", "Answer $ \n 9 \n $"): _OPEN_INLINE,
    ("$9$", "Answer \\( \n 9 \n \\)"): _OPEN_INLINE,
    ("$(1,3)$", "${1,3}$"):
        "(1,3) is an ordered pair or an open interval; {1,3} (braces are grouping) is the list 1, 3",
    ("$1 - \\frac{1}{\\mathrm{e}}$", "$1 + \\frac{1}{\\mathrm{e}}$"):
        "the expected verdict is wrong: 1 - 1/e != 1 + 1/e",
    ("\\boxed{1} papers and \\boxed{2} bins", "$\\boxed{1,2}$"): _WORDS_BETWEEN_BOXES,
    ("$$(3, 3), (1, 1)$$", "$$\\boxed{(3, 3)} \\text{ for part (a) and } \\boxed{(1, 1)}$$"): _WORDS_BETWEEN_BOXES,
}
_SETTINGS = ("precision", "strict", "allow_set_relation_comp")


def _call_keywords(func: ast.FunctionDef) -> dict:
  keywords = {}
  for node in ast.walk(func):
    if isinstance(node, ast.Call):
      for kw in node.keywords:
        if kw.arg in _SETTINGS:
          keywords[kw.arg] = kw.value
  return keywords


def load_cases(tests_dir: pathlib.Path) -> list[tuple[str, str, str, bool]]:
  """(table, gold, pred, expected) of every default-setting parametrized case in the test files."""
  cases = []
  for path in sorted(tests_dir.glob("test_*.py")):
    tree = ast.parse(path.read_text(), filename=str(path))
    for func in [n for n in tree.body if isinstance(n, ast.FunctionDef)]:
      settings = _call_keywords(func)
      for deco in func.decorator_list:
        if not (isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize"):
          continue
        names = [n.strip() for n in ast.literal_eval(deco.args[0]).split(",")]
        if names[:2] != ["gold", "pred"] or names[2] not in ("expected", "result"):
          continue
        extra = names[3:]
        if any(s not in extra and s in settings for s in _SETTINGS) or set(extra) - {"precision"}:
          continue
        for row in ast.literal_eval(deco.args[1]):
          row = dict(zip(names, row))
          if row.get("precision", 6) != 6:
            continue
          cases.append((f"{path.stem}.{func.name}", row["gold"], row["pred"], bool(row[names[2]])))
  return cases


def grade_cases(cases) -> list[tuple]:
  """(table, gold, pred, expected, ours) of each case, graded by the project's full path."""
  return [(table, gold, pred, expected, grade(pred, extract_answer(gold) or gold))
          for table, gold, pred, expected in cases]


def summary(results) -> str:
  """The agreement line: overall, and apart from the deliberate differences."""
  agree = sum(r[3] == r[4] for r in results)
  deliberate = sum(r[3] != r[4] and (r[1], r[2]) in DELIBERATE for r in results)
  return (f"Math-Verify's test suite: agreement with the expected verdicts {agree / len(results):.1%} "
          f"({agree}/{len(results)}); apart from {deliberate} deliberate differences: "
          f"{agree / (len(results) - deliberate):.1%} ({agree}/{len(results) - deliberate})")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tests_dir", required=True, type=pathlib.Path, help="a Math-Verify checkout's tests/")
  parser.add_argument("--show", type=int, default=40, help="disagreements to print")
  args = parser.parse_args()
  cases = load_cases(args.tests_dir)
  if not cases:
    raise SystemExit(f"{args.tests_dir}: no parametrized (gold, pred, expected) tables found")
  start = time.time()
  results = grade_cases(cases)
  seconds = time.time() - start
  missed = [r for r in results if r[3] != r[4]]
  deliberate = [r for r in missed if (r[1], r[2]) in DELIBERATE]
  print(f"{len(cases)} default-setting cases from {args.tests_dir}, graded in {seconds:.1f}s")
  print(summary(results))
  tables: dict[str, list[int]] = {}
  for r in results:
    tables.setdefault(r[0], [0, 0])[r[3] == r[4]] += 1
  for table, (bad, good) in tables.items():
    print(f"  {table}: {good}/{good + bad}")
  for _, gold, pred, _, _ in deliberate:
    print(f"  deliberate: gold={gold!r} pred={pred!r}: {DELIBERATE[(gold, pred)]}")
  for _, gold, pred, expected, ours in [r for r in missed if r not in deliberate][:args.show]:
    print(f"  MISS expected={int(expected)} ours={int(ours)} gold={gold!r} pred={pred[-160:]!r} "
          f"extracted={extract_answer(pred)!r}")


if __name__ == "__main__":
  main()
