"""Grading many problems in parallel worker processes, each problem under a hard wall-clock bound.

`grade_problem` extracts, clusters and grades one problem's N samples. `grade_problems` runs it over worker
processes; a worker that exceeds `timeout` on a problem (e.g. stuck in C code that SIGALRM cannot interrupt) is
killed and replaced, and that problem is graded again without sympy (normalized-string keys only), flagged
`"degraded": True`. `grade_file` is the same over a JSONL candidates file.
"""
import json
import multiprocessing
import os
import time
from multiprocessing.connection import wait
from typing import Iterable, Iterator, Optional, Sequence

from mathft_jax.grading import symbolic
from mathft_jax.grading.equivalence import cluster, parts_equivalent
from mathft_jax.grading.extract import extract_answers


def grade_problem(texts: Sequence[Optional[str]], reference: Optional[str], use_sympy: bool = True,
                  budget: float = 20.0, rel_tol: float = symbolic.STRICT) -> dict:
  """One problem's N solution texts -> {"answers", "clusters", "correct"} (lists of length N).

  Correctness is decided once per cluster (its first member against the reference), so all members of a cluster
  share one verdict. Samples without an answer are in cluster -1 and incorrect. Symbolic work gets `budget`
  seconds in all (clustering at most half of it); past that, answers compare by their keys. Numbers within
  `rel_tol` (relative) are equal.
  """
  parts = [extract_answers(t) for t in texts]
  answers = [", ".join(p) or None for p in parts]
  with symbolic.budget(budget):
    clusters = cluster(answers, use_sympy=use_sympy, budget=budget / 2, rel_tol=rel_tol)
    verdict: dict[int, bool] = {}
    for p, a, c in zip(parts, answers, clusters):
      if c >= 0 and c not in verdict:
        verdict[c] = bool(reference) and (parts_equivalent(p, reference, rel_tol=rel_tol) if use_sympy
                                          else _string_equal(a, reference) or _string_equal(p[-1], reference))
  return {"answers": answers, "clusters": clusters, "correct": [verdict.get(c, False) for c in clusters]}


def _string_equal(a: Optional[str], b: Optional[str]) -> bool:
  from mathft_jax.grading.equivalence import answer_key
  return answer_key(a, use_sympy=False) == answer_key(b, use_sympy=False) is not None


def _worker(conn) -> None:
  while True:
    task = conn.recv()
    if task is None:
      return
    index, texts, reference, rel_tol = task
    conn.send((index, grade_problem(texts, reference, rel_tol=rel_tol)))


class _Pool:
  """Worker processes, each doing one problem at a time; a worker over its time bound is killed and replaced."""

  def __init__(self, num_workers: int):
    # forkserver: workers fork from a clean single-threaded server, never from a caller running JAX threads.
    if "forkserver" in multiprocessing.get_all_start_methods():
      self.ctx = multiprocessing.get_context("forkserver")
      self.ctx.set_forkserver_preload(["mathft_jax.grading.batch"])
    else:
      self.ctx = multiprocessing.get_context("spawn")
    self.workers = [self._start() for _ in range(num_workers)]

  def _start(self):
    parent, child = self.ctx.Pipe()
    proc = self.ctx.Process(target=_worker, args=(child,), daemon=True)
    proc.start()
    child.close()
    return proc, parent

  def replace(self, i: int) -> None:
    proc, conn = self.workers[i]
    proc.kill()
    proc.join()
    conn.close()
    self.workers[i] = self._start()

  def close(self) -> None:
    for proc, conn in self.workers:
      try:
        conn.send(None)
      except (BrokenPipeError, OSError):
        pass
      proc.join(timeout=1)
      if proc.is_alive():
        proc.kill()
      conn.close()


def grade_problems(problems: Iterable[tuple[Sequence[Optional[str]], Optional[str]]], num_workers: int = 0,
                   timeout: float = 60.0, rel_tol: float = symbolic.STRICT) -> Iterator[dict]:
  """Grades (texts, reference) pairs; yields results in input order. num_workers=0 means one per CPU. Every
  problem is graded in a worker process that is killed past `timeout` seconds, whatever the worker count (one
  worker too: C code that SIGALRM cannot interrupt must not hang the caller)."""
  problems = list(problems)
  if not problems:
    return
  num_workers = min(num_workers or os.cpu_count() or 1, len(problems))
  pool = _Pool(num_workers)
  results: dict[int, dict] = {}
  busy: dict[int, tuple[int, float]] = {}  # worker -> (problem index, start time)
  next_task, next_out = 0, 0
  try:
    while next_out < len(problems):
      for w in range(num_workers):
        if w not in busy and next_task < len(problems):
          texts, reference = problems[next_task]
          pool.workers[w][1].send((next_task, list(texts), reference, rel_tol))
          busy[w] = (next_task, time.monotonic())
          next_task += 1
      conns = {pool.workers[w][1]: w for w in busy}
      for conn in wait(list(conns), timeout=0.5):
        w = conns[conn]
        try:
          index, result = conn.recv()
        except (EOFError, OSError):  # the worker died (e.g. out of memory): grade that problem safely here
          index = busy[w][0]
          result = {**grade_problem(*problems[index], use_sympy=False), "degraded": True}
          pool.replace(w)
        results[index] = result
        del busy[w]
      now = time.monotonic()
      for w, (index, start) in list(busy.items()):
        if now - start > timeout:
          pool.replace(w)
          results[index] = {**grade_problem(*problems[index], use_sympy=False), "degraded": True}
          del busy[w]
      while next_out in results:
        yield results.pop(next_out)
        next_out += 1
  finally:
    pool.close()


class CandidateFileError(ValueError):
  """A malformed candidates file; the message names the file and line."""


def group_candidates(located: Iterable[tuple[str, dict]]) -> dict[str, list[dict]]:
  """("file:line", record) pairs of candidate records (problem_id, sample_id, text, ...) -> records by problem,
  samples in sample_id order; a malformed record is a CandidateFileError naming its file and line."""
  by_problem: dict[str, list[dict]] = {}
  for where, record in located:
    try:
      key = str(record["problem_id"])
      int(record["sample_id"])
      if not isinstance(record["text"], str):
        raise TypeError("text is not a string")
    except (ValueError, KeyError, TypeError) as e:
      raise CandidateFileError(f"{where}: malformed candidate record ({e!r})") from None
    by_problem.setdefault(key, []).append(record)
  for records in by_problem.values():
    records.sort(key=lambda r: int(r["sample_id"]))
  return by_problem


def read_candidates(path: str) -> dict[str, list[dict]]:
  """A local JSONL file of candidate records, grouped (`group_candidates`)."""
  def located():
    with open(path) as f:
      for line_no, line in enumerate(f, 1):
        if line.strip():
          try:
            yield f"{path}:{line_no}", json.loads(line)
          except ValueError as e:
            raise CandidateFileError(f"{path}:{line_no}: malformed candidate record ({e!r})") from None
  return group_candidates(located())


def grade_file(candidates_path: str, references: dict[str, str], out_path: str, num_workers: int = 0,
               timeout: float = 60.0) -> int:
  """Writes graded records (candidate fields + answer, cluster, correct) to out_path atomically; returns count."""
  by_problem = read_candidates(candidates_path)
  unknown = sorted(set(by_problem) - set(references))
  if unknown:
    raise CandidateFileError(f"{candidates_path}: {len(unknown)} problem ids have no reference answer, "
                             f"e.g. {unknown[:3]}")
  ids = list(by_problem)
  jobs = (([r["text"] for r in by_problem[i]], references[i]) for i in ids)
  tmp = out_path + ".tmp"
  count = 0
  with open(tmp, "w") as f:
    for pid, graded in zip(ids, grade_problems(jobs, num_workers=num_workers, timeout=timeout)):
      for k, record in enumerate(by_problem[pid]):
        out = {**record, "answer": graded["answers"][k], "cluster": graded["clusters"][k],
               "correct": graded["correct"][k]}
        if graded.get("degraded"):
          out["degraded"] = True
        f.write(json.dumps(out) + "\n")
        count += 1
  os.replace(tmp, out_path)
  return count
