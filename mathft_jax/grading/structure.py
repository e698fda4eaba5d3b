"""Splitting a normalized answer into its parts, so that each scalar can be compared on its own.

Nodes (cached: treat them as read-only):
- ("scalar", s): one expression (or a relation, `x\\geq5`, compared as a relation);
- ("seq", open, close, [items]): a tuple, point or interval (`(1,2)`, `[0,1)`); chained inequalities around a
  name (`-2\\leq x<7`) are intervals too;
- ("set", [items]) for `\\{..\\}`, ("list", [items]) for "1, 2" (both unordered), ("union", [items]) for `\\cup`;
- ("labeled", name, value, node): `x=5`, `f(x)=1`, `(p,q)=(3,2)`, `x\\in[0,1]`, `x\\approx11`: a name and its value;
- ("eq", lhs, rhs): an equation whose left side is not a name (`2x+4y-3=0`), equal only to an equation (or a
  named value) with the same solutions.
A chain `x=5+5+1=11` and a computation `3\\cdot4=12` are their last parts; `1\\pm\\sqrt2` is the list of both;
`a\\approx b` is `a` (`x\\approx 1.4` is 1.4).
"""
import re
from functools import lru_cache
from typing import Optional

Structure = tuple
_COMMANDS = re.compile(r"\\[a-zA-Z]+")
_RELATION = re.compile(r"\\leq|\\geq|\\neq|<|>")
_EQUALS = re.compile(r"=")
_IN = re.compile(r"\\in(?![a-zA-Z])")
_APPROX = re.compile(r"\\approx(?![a-zA-Z])")
_CUP = re.compile(r"\\cup(?![a-zA-Z])")
_COMMA = re.compile(r",")


def _split_top(s: str, sep: re.Pattern, with_seps: bool = False):
  """Splits on matches of `sep` outside (), [], {} and \\{ \\} (and the separators too with `with_seps`)."""
  parts, seps, depth, start, i = [], [], 0, 0, 0
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
    elif depth == 0:
      match = sep.match(s, i)
      if match and match.end() > i:
        parts.append(s[start:i])
        seps.append(match.group(0))
        start = i = match.end()
        continue
    if c == "\\":  # a command's name is not a separator
      command = _COMMANDS.match(s, i)
      if command:
        i = command.end()
        continue
    i += 1
  parts.append(s[start:])
  return (parts, seps) if with_seps else parts


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


def is_name(s: str) -> bool:
  """A name rather than a value: letters with subscripts, a function of letters, `|AB|`, `A:B`, `(p,q)`,
  `\\frac{NO}{BO}`; no digits (but in subscripts), no operators."""
  if not s or len(s) > 40:
    return False
  t = re.sub(r"_\{[^{}]*\}|_\w", "", s)
  t = _COMMANDS.sub("", t)
  return bool(re.search(r"[A-Za-z]", t)) and not re.search(r"[\d+\-*/^=<>!.]", t)


def _interval(s: str) -> Optional[Structure]:
  """`a<x\\leq b` (a name in the middle, both relations one way) as the interval (a, b]."""
  parts, ops = _split_top(s, _RELATION, with_seps=True)
  if len(parts) != 3 or not is_name(parts[1]) or "\\neq" in ops:
    return None
  up = [op in ("<", "\\leq") for op in ops]
  if up[0] != up[1]:
    return None
  low, high = (parts[0], parts[2]) if up[0] else (parts[2], parts[0])
  low_op, high_op = (ops[0], ops[1]) if up[0] else (ops[1], ops[0])
  return ("seq", "(" if low_op in ("<", ">") else "[", ")" if high_op in ("<", ">") else "]",
          [("scalar", low), ("scalar", high)])


def _plus_minus(s: str) -> Optional[Structure]:
  parts = _split_top(s, re.compile(r"\\pm(?![a-zA-Z])|\\mp(?![a-zA-Z])"))
  if len(parts) != 2:
    return None
  return ("list", [("scalar", parts[0] + "+" + parts[1]), ("scalar", parts[0] + "-" + parts[1])])


@lru_cache(maxsize=100_000)
def structure(s: str, depth: int = 0) -> Structure:
  """Splits a normalized answer into its parts (see the module doc); depth-limited for hostile input."""
  if depth > 8 or len(s) > 2000:
    return ("scalar", s)
  sub = depth + 1
  member = _split_top(s, _IN)
  if len(member) == 2 and is_name(member[0]):
    return ("labeled", member[0], member[1], structure(member[1], sub))
  sides = _split_top(s, _EQUALS)
  commas = len(_split_top(s, _COMMA)) > 1
  if len(sides) == 2 and is_name(sides[0]) and sides[1]:
    return ("labeled", sides[0], sides[1], structure(sides[1], sub))
  if len(sides) > 2 and not commas and sides[-1]:
    return structure(sides[-1], sub)
  if len(sides) == 2 and not commas and sides[0] and sides[1]:
    if not any(re.search(r"[A-Za-z]", _COMMANDS.sub("", side)) for side in sides):  # `3\\cdot4=12`: its result
      return structure(sides[1], sub)
    return ("eq", sides[0], sides[1])
  approx = _split_top(s, _APPROX)
  if len(approx) > 1 and all(approx):
    return structure(approx[-1] if is_name(approx[0]) else approx[0], sub)
  union = _split_top(s, _CUP)
  if len(union) > 1:
    return ("union", [structure(p, sub) for p in union])
  if _enclosed(s, "\\{", "\\}"):
    return ("set", [structure(p, sub) for p in _split_top(s[2:-2], _COMMA)])
  for open_ in ("(", "["):
    for close in (")", "]"):
      if _enclosed(s, open_, close):
        items = _split_top(s[1:-1], _COMMA)
        if len(items) > 1:
          return ("seq", open_, close, [structure(p, sub) for p in items])
  items = _split_top(s, _COMMA)
  if len(items) > 1 and all(items):
    return ("list", [structure(p, sub) for p in items])
  return _interval(s) or _plus_minus(s) or ("scalar", s)
