"""String normalization of MATH answer forms, and splitting an answer into its structure.

`normalize` rewrites presentation-only differences away: `\\dfrac`/`\\tfrac`, `\\left`/`\\right`, spacing commands,
units in `\\text{}`, degrees, percent, dollars, thousands separators, `x = 5`, trailing periods, mixed numbers,
`\\frac34`, unicode minus and friends. `structure` then splits a normalized answer into tuples/intervals, sets,
unordered lists ("1, 2"), unions, and scalars, so that each scalar can be compared on its own.
"""
import re
from typing import Optional, Union

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
               "days", "day", "pounds", "ounces", "gallons", "liters", "people", "students", "ways", "cups")
_UNIT_RE = re.compile(r"(?<=[\d}])\s*(?:(?:%s)\b\s*\^?\{?\d?\}?\s*)+$" % "|".join(_UNIT_WORDS))
_VAR_LHS = re.compile(r"^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=(?!=)(.+)$")


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


def normalize(answer: Optional[str]) -> str:
  """A normalized LaTeX string ('' for no answer); equal strings mean equal answers."""
  if not answer:
    return ""
  s = answer.strip()
  for k, v in _UNICODE.items():
    s = s.replace(k, v)
  s = s.replace("\n", " ").replace("\\$", "").replace("$", "")
  s = _DROP.sub("", s)
  s = re.sub(r"\\[dt]frac", r"\\frac", s)
  s = re.sub(r"\\[dt]binom", r"\\binom", s)
  s = re.sub(r"\^\s*\{?\s*\\circ\s*\}?", "", s).replace("\\degree", "")
  s = s.replace("\\%", "").replace("%", "")
  s = _replace_text_groups(s)
  s = _UNIT_RE.sub("", s.strip())
  lhs = _VAR_LHS.match(s)
  if lhs and "=" not in lhs.group(1) and "," not in s:
    s = lhs.group(1)
  s = s.replace("{,}", "")
  s = re.sub(r"\s+", "", s)
  if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
    s = s.replace(",", "")
  s = s.rstrip(".").rstrip("\\")
  s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)  # .5 -> 0.5
  s = _braced_fracs(s)
  # Mixed numbers: 2\frac{1}{2} -> (2+\frac{1}{2}) (only digits: 2\frac{\pi}{3} is a product)
  s = re.sub(r"(?<![\d}^_.])(\d+)\\frac\{(\d+)\}\{(\d+)\}", r"(\1+\\frac{\2}{\3})", s)
  s = re.sub(r"^\(([A-Ea-e])\)$", r"\1", s)  # multiple choice "(C)"
  if s.startswith("\\boxed{") and s.endswith("}"):
    s = s[len("\\boxed{"):-1]
  return s


# ---------------------------------------------------------------------------------------------------------------
# Structure: ("scalar", s) | ("seq", open, close, [items]) | ("set", [items]) | ("list", [items]) | ("union", [..])
Structure = Union[tuple]
_OPEN = {"(": ")", "[": "]", "\\{": "\\}"}


def _split_top(s: str, sep: str) -> list[str]:
  """Splits on `sep` outside (), [], {} and \\{ \\}."""
  parts, depth, start, i = [], 0, 0, 0
  while i < len(s):
    if s.startswith("\\{", i) or s.startswith("\\}", i):
      depth += 1 if s[i + 1] == "{" else -1
      i += 2
      continue
    c = s[i]
    if c in "([{":
      depth += 1
    elif c in ")]}":
      depth -= 1
    elif depth == 0 and s.startswith(sep, i):
      parts.append(s[start:i])
      start = i + len(sep)
      i = start
      continue
    i += 1
  parts.append(s[start:])
  return parts


def _bracket_steps(s: str):
  """Yields (index after the token, depth change) for every bracket token, `\\{` and `\\}` included."""
  i = 0
  while i < len(s):
    if s.startswith("\\{", i) or s.startswith("\\}", i):
      yield i + 2, 1 if s[i + 1] == "{" else -1
      i += 2
      continue
    if s[i] in "([{":
      yield i + 1, 1
    elif s[i] in ")]}":
      yield i + 1, -1
    i += 1


def _enclosed(s: str, open_: str, close: str) -> bool:
  """s is one bracketed group: the opening `open_` is closed by the final `close` and not before."""
  if not (s.startswith(open_) and s.endswith(close)) or len(s) < len(open_) + len(close):
    return False
  depth = 0
  for end, step in _bracket_steps(s):
    depth += step
    if depth <= 0:
      return end == len(s) and depth == 0
  return False


def structure(s: str, depth: int = 0) -> Structure:
  """Splits a normalized answer into its parts (see the module doc); depth-limited for hostile input."""
  if depth > 8 or len(s) > 2000:
    return ("scalar", s)
  union = _split_top(s, "\\cup")
  if len(union) > 1:
    return ("union", [structure(p, depth + 1) for p in union])
  if _enclosed(s, "\\{", "\\}"):
    return ("set", [structure(p, depth + 1) for p in _split_top(s[2:-2], ",")])
  for open_ in ("(", "["):
    for close in (")", "]"):
      if _enclosed(s, open_, close):
        items = _split_top(s[1:-1], ",")
        if len(items) > 1:
          return ("seq", open_, close, [structure(p, depth + 1) for p in items])
  items = _split_top(s, ",")
  if len(items) > 1 and all(items):
    return ("list", [structure(p, depth + 1) for p in items])
  return ("scalar", s)
