"""String normalization of MATH answer forms.

`normalize` rewrites presentation-only differences away: `\\dfrac`/`\\tfrac`, `\\left`/`\\right`, spacing commands,
units in `\\text{}`, degrees, percent, dollars, thousands separators, trailing periods, mixed numbers,
`\\frac34`, unicode minus and friends; relation symbols (`>=`, `\\ge`, `\\geqslant` -> `\\geq`), matrix environments
(`bmatrix`, `array` -> `pmatrix`), "and"/"or"/";" between parts of an answer -> ",". `structure` (its own module)
then splits the result into its parts.
"""
import re
from functools import lru_cache
from typing import Optional

from mathft_jax.grading.extract import matching_brace

_UNICODE = {"−": "-", "–": "-", "×": "\\times ", "÷": "\\div ", "π": "\\pi ", "∞": "\\infty ", "√": "\\sqrt",
            "≤": "\\le ", "≥": "\\ge ", "·": "\\cdot ", "°": "^\\circ", "\u00a0": " "}
# Presentation-only commands; not after a backslash (`\\\\ ` is a row break), word commands not before a letter.
_DROP = re.compile(r"(?<!\\)(?:\\(?:left|right|displaystyle|qquad|quad|bigl|bigr|Bigl|Bigr|big|Big)(?![a-zA-Z])"
                   r"|\\[!,:; ])")
_TEXT_COMMANDS = ("\\text", "\\textbf", "\\textit", "\\mbox", "\\mathrm", "\\mathbf", "\\textnormal", "\\operatorname")
_UNIT_WORDS = ("units", "unit", "sq", "square", "cubic", "inches", "inch", "in", "feet", "foot", "ft", "yards",
               "yard", "meters", "meter", "m", "cm", "mm", "km", "miles", "mile", "mph", "degrees", "degree",
               "dollars", "dollar", "cents", "cent", "hours", "hour", "minutes", "minute", "seconds", "second",
               "days", "day", "pounds", "ounces", "gallons", "liters", "people", "students", "ways", "cups",
               "percentage", "percent", "pct")
_UNIT_RE = re.compile(r"(?<=[\d}])\s*(?:(?:%s)\b\s*\^?\{?\d?\}?\s*)+$" % "|".join(_UNIT_WORDS))
_RELATIONS = ((r">=|\\geqslant|\\geq?(?![a-zA-Z])", "\\geq "), (r"<=|\\leqslant|\\leq?(?![a-zA-Z])", "\\leq "),
              (r"!=|\\neq?(?![a-zA-Z])", "\\neq "), (r"\\lt(?![a-zA-Z])", "<"), (r"\\gt(?![a-zA-Z])", ">"))
_MATRIX_ENVS = re.compile(r"\\(begin|end)\{(?:[bBvV]?matrix|smallmatrix)\}")
_ARRAY = re.compile(r"\[?\\begin\{array\}\{[^{}]*\}(.*?)\\end\{array\}\]?", re.DOTALL)
# "and"/"or" between two parts of an answer ("12 and 13", "(11,7) or (7,11)", "19, 46, and 82"): a list.
_CONJUNCTION = re.compile(r"(?<=[\d)\]}])\s*,?\s*(?:and|or)\s*(?=[-\d(\[\\A-Za-z])")


def _replace_text_groups(s: str) -> str:
  """`\\text{cm}` after a number is a unit (dropped); otherwise `\\text{Monday}` -> `Monday`."""
  pieces, kept, i = [], [], 0
  while True:
    starts = [(s.find(cmd + "{", i), cmd) for cmd in _TEXT_COMMANDS]
    starts = [(p, c) for p, c in starts if p >= 0]
    if not starts:
      pieces.append(("raw", s[i:]))
      break
    p, cmd = min(starts)
    end = matching_brace(s, p + len(cmd))
    if end is None:
      pieces.append(("raw", s[i:]))
      break
    pieces.append(("raw", s[i:p]))
    pieces.append(("text", s[p + len(cmd) + 1:end]))
    i = end + 1
  raw = "".join(t for kind, t in pieces if kind == "raw")
  has_number = bool(re.search(r"\d", raw))
  for kind, t in pieces:
    if kind == "raw" or not has_number:
      kept.append(t)
  return "".join(kept)


def _braced_fracs(s: str) -> str:
  """`\\frac34` -> `\\frac{3}{4}`, `\\frac3{x}`, `\\frac{x}4`; `\\sqrt2` -> `\\sqrt{2}`."""
  s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
  s = re.sub(r"\\frac\s*(\d)\s*(?=\{)", r"\\frac{\1}", s)
  s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", s)
  s = re.sub(r"\\sqrt\s*(\d|[a-zA-Z])", r"\\sqrt{\1}", s)  # LaTeX takes one token: \\sqrt25 = \\sqrt{2}5
  return s


@lru_cache(maxsize=100_000)
def normalize(answer: Optional[str]) -> str:
  """A normalized LaTeX string ('' for no answer); equal strings mean equal answers."""
  if not answer:
    return ""
  s = answer.strip()
  for k, v in _UNICODE.items():
    s = s.replace(k, v)
  s = s.replace("\n", " ").replace("\\$", "").replace("$", "")
  s = re.sub(r"(?<!\\)\\\\(?=[a-zA-Z]{2})", r"\\", s)  # "\\\\frac" written for "\\frac"
  s = re.sub(r",\\!\s*", ",", s)  # MATH's thousands: 11,\\!111
  s = _DROP.sub("", s)
  s = re.sub(r"\\[dtc]frac", r"\\frac", s)
  for pattern, replacement in _RELATIONS:
    s = re.sub(pattern, replacement.replace("\\", "\\\\"), s)
  s = _MATRIX_ENVS.sub(lambda m: "\\%s{pmatrix}" % m.group(1), s)
  s = _ARRAY.sub(lambda m: "\\begin{pmatrix}%s\\end{pmatrix}" % m.group(1), s)
  s = re.sub(r"\\\\\s*(?=\\end\{pmatrix\})", "", s)  # a row break before the end
  s = re.sub(r"\\[dt]binom", r"\\binom", s)
  s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\degree", "")
  s = s.replace("\\%", "").replace("%", "")
  s = re.sub(r"\\text\{\s*(and|or)\s*\}", r" \1 ", s)
  s = _replace_text_groups(s)
  s = _UNIT_RE.sub("", s.strip())
  s = _CONJUNCTION.sub(",", s).replace(";", ",")
  s = s.replace("{,}", "").strip()
  if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?|-?\d{1,3}( \d{3})+(\.\d+)?", s):  # not "32, 349": a list
    s = s.replace(",", "").replace(" ", "")
  s = re.sub(r"\s+", "", s)
  s = s.rstrip(".").rstrip("\\")
  s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # .5 -> 0.5
  s = _braced_fracs(s)
  # Mixed numbers: 2\frac{1}{2} -> (2+\frac{1}{2}) (only digits: 2\frac{\pi}{3} is a product)
  s = re.sub(r"(?<![\d}^_.])(\d+)\\frac\{(\d+)\}\{(\d+)\}", r"(\1+\\frac{\2}{\3})", s)
  s = re.sub(r"^\(([A-Ea-e])\)$", r"\1", s)  # multiple choice "(C)"
  if s.startswith("\\boxed{") and s.endswith("}"):
    s = s[len("\\boxed{"):-1]
  for _ in range(3):  # "{1,3}": a group, not a set
    if s.startswith("{") and matching_brace(s, 0) == len(s) - 1:
      s = s[1:-1]
  if s.startswith("(\\begin{pmatrix}") and s.endswith("\\end{pmatrix})"):
    s = s[1:-1]
  return s
