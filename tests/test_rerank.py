"""mathft-rerank on hand-built candidate files: metrics, outputs, errors, and the evaluator-data hand-off."""
import json
import os

import pytest

from mathft_jax.grading.batch import CandidateFileError
from mathft_jax.reranking.rerank import rerank

# problem -> (reference, [(boxed answer or None, score)]); N = 4.
PROBLEMS = {
    "a": ("3", [("3", 0.9), ("5", 0.2), ("5", 0.3), ("3.0", 0.8)]),     # tie 2-2: maj1 = first seen cluster "3"
    "b": ("7", [("1", 0.9), ("1", 0.8), ("1", 0.7), ("7", 0.95)]),      # maj1 wrong, RR right
    "c": ("\\frac12", [(None, 0.99), ("0.5", 0.1), ("2", 0.6), ("2", 0.5)]),  # RR.All picks the no-answer sample
}


def _write(tmp_path, drop_score=False, bad_line=False):
  cands, scores, refs = [], [], []
  for pid, (ref, samples) in PROBLEMS.items():
    refs.append({"problem_id": pid, "answer": ref, "level": 1 if pid == "a" else 2, "subject": "Algebra",
                 "problem": f"Problem {pid}?"})
    for k, (answer, score) in enumerate(samples):
      text = f"Work... so $\\boxed{{{answer}}}$." if answer is not None else "I am not sure."
      cands.append({"problem_id": pid, "sample_id": k, "text": text})
      scores.append({"problem_id": pid, "sample_id": k, "score": score})
  if drop_score:
    scores.pop()
  lines = [json.dumps(c) + "\n" for c in cands]
  if bad_line:
    lines.insert(2, "{not json\n")
  (tmp_path / "cands.jsonl").write_text("".join(lines))
  (tmp_path / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
  (tmp_path / "refs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in refs))
  greedy = [{"problem_id": pid, "sample_id": 0, "text": f"$\\boxed{{{ref}}}$" if pid != "b" else "no"}
            for pid, (ref, _) in PROBLEMS.items()]
  (tmp_path / "greedy.jsonl").write_text("".join(json.dumps(g) + "\n" for g in greedy))
  return {k: str(tmp_path / f"{k}.jsonl") for k in ("cands", "scores", "refs", "greedy")}


def test_metrics_outputs_and_graded_file(tmp_path):
  files = _write(tmp_path)
  out = str(tmp_path / "report")
  m = rerank(candidates=files["cands"], scores=files["scores"], greedy=files["greedy"], references=files["refs"],
             output_dir=out, k_clusters=1, num_workers=1)
  at_n = {name: series["4"]["mean"] for name, series in m["strategies"].items()}
  assert at_n["maj1"] == pytest.approx(1 / 3)      # a right (tie to first seen), b wrong, c wrong ("2" x2)
  assert at_n["rr_all"] == pytest.approx(2 / 3)    # a 0.9 -> "3" right, b 0.95 -> "7" right, c 0.99 -> none
  assert at_n["pass"] == pytest.approx(1.0)
  assert at_n["rr_topk"] == pytest.approx(1 / 3)   # K=1: a -> "3" cluster right; b -> "1" wrong; c -> "2" wrong
  assert at_n["majk"] == pytest.approx(1 / 3)
  assert m["greedy_pass@1"]["mean"] == pytest.approx(2 / 3)
  assert m["strategies"]["pass"]["1"]["mean"] == pytest.approx((2 / 4 + 1 / 4 + 1 / 4) / 3)
  assert m["by_level"]["1"]["num_problems"] == 1 and m["by_level"]["1"]["maj1"] == 1.0
  assert m["evaluator"]["num_correct"] == 4 and 0 <= m["evaluator"]["auc"] <= 1
  low, high = m["strategies"]["maj1"]["4"]["ci95"]
  assert low <= at_n["maj1"] <= high
  graded = [json.loads(line) for line in open(os.path.join(out, "graded.jsonl"))]
  assert len(graded) == 12 and graded[0]["problem"] == "Problem a?" and graded[3]["correct"] is True
  assert graded[8]["cluster"] == -1 and graded[8]["answer"] is None
  assert os.path.getsize(os.path.join(out, "accuracy_vs_n.png")) > 1000
  report = open(os.path.join(out, "report.md")).read()
  assert "RR.Top-1@4" in report and "pass@1 (greedy)" in report and "AUC" in report
  from mathft_jax.evaluator.pairs import build_pairs, read_graded  # graded.jsonl feeds evaluator training
  pairs = build_pairs(read_graded(os.path.join(out, "graded.jsonl")))
  assert {p["problem_id"] for p in pairs} == {"a", "b", "c"}


def test_rr_all_values(tmp_path):
  files = _write(tmp_path)
  m = rerank(candidates=files["cands"], scores=files["scores"], references=files["refs"],
             output_dir=str(tmp_path / "r"), num_workers=1)
  # a: best 0.9 -> "3" right; b: best 0.95 -> "7" right; c: best 0.99 -> no answer, wrong.
  assert m["strategies"]["rr_all"]["4"]["mean"] == pytest.approx(2 / 3)
  # W.RR: a: "3" 1.7 vs "5" 0.5 right; b: "1" 2.4 vs "7" 0.95 wrong; c: "2" 1.1 vs "0.5" 0.1 wrong.
  assert m["strategies"]["wrr"]["4"]["mean"] == pytest.approx(1 / 3)


def test_missing_scores_skip_scored_strategies(tmp_path):
  files = _write(tmp_path, drop_score=True)
  m = rerank(candidates=files["cands"], scores=files["scores"], references=files["refs"],
             output_dir=str(tmp_path / "r"), num_workers=1)
  assert "rr_all" not in m["strategies"] and "maj1" in m["strategies"]
  assert m["skipped"] == ["score-based strategies: 1 candidates have no score"]
  assert "Skipped: score-based strategies" in open(tmp_path / "r" / "report.md").read()


def test_bad_inputs_name_file_and_line(tmp_path):
  files = _write(tmp_path, bad_line=True)
  with pytest.raises(CandidateFileError, match=r"cands\.jsonl:3: not JSON"):
    rerank(candidates=files["cands"], references=files["refs"], output_dir=str(tmp_path / "r"))
  files = _write(tmp_path)
  (tmp_path / "refs.jsonl").write_text(json.dumps({"problem_id": "a", "answer": "3"}) + "\n")
  with pytest.raises(CandidateFileError, match=r"2 problem ids are not in .*refs\.jsonl"):
    rerank(candidates=files["cands"], references=files["refs"], output_dir=str(tmp_path / "r"))


def test_likelihood_scores_of_a_sequence_evaluator(tmp_path):
  """score_field="likelihood" ranks by exp(loglik / num_tokens): here the reverse of the label scores."""
  files = _write(tmp_path)
  rows = [json.loads(line) for line in open(files["scores"])]
  with open(files["scores"], "w") as f:
    for r in rows:  # a long sample with a high total log-likelihood still loses on the per-token figure
      f.write(json.dumps({**r, "loglik": -10.0 * (1 + r["score"]), "num_tokens": 10}) + "\n")
  m = rerank(candidates=files["cands"], scores=files["scores"], references=files["refs"],
             output_dir=str(tmp_path / "lik"), k_clusters=1, score_field="likelihood")
  # lowest label score now wins: a -> 0.2 ("5", wrong), b -> 0.7 ("1", wrong), c -> 0.1 ("0.5", right)
  assert m["strategies"]["rr_all"]["4"]["mean"] == pytest.approx(1 / 3)
  assert m["provenance"]["score_field"] == "likelihood"
  with pytest.raises(ValueError, match="score_field must be one of"):
    rerank(candidates=files["cands"], scores=files["scores"], references=files["refs"],
           output_dir=str(tmp_path / "bad"), score_field="logits")


def test_generator_likelihood_control(tmp_path):
  """Candidates that carry the sampler's logprob and num_tokens also get the control: RR.All by the generator's
  own per-token likelihood, on the same subsets, with its classifier metrics; without them there is no control."""
  files = _write(tmp_path)
  m = rerank(candidates=files["cands"], scores=files["scores"], references=files["refs"],
             output_dir=str(tmp_path / "plain"))
  assert "generator_rr_all" not in m["strategies"] and "generator_likelihood" not in m
  rows = [json.loads(line) for line in open(files["cands"])]
  with open(files["cands"], "w") as f:
    for r in rows:  # likelihood = the reverse of the label scores (a per-token figure: lengths differ)
      score = PROBLEMS[r["problem_id"]][1][r["sample_id"]][1]
      tokens = 5 + 10 * r["sample_id"]
      f.write(json.dumps({**r, "logprob": -(1 + score) * tokens, "num_tokens": tokens}) + "\n")
  m = rerank(candidates=files["cands"], scores=files["scores"], references=files["refs"],
             output_dir=str(tmp_path / "control"))
  # as in the likelihood test: a -> "5" (wrong), b -> "1" (wrong), c -> "0.5" (right); the evaluator's RR.All
  # (a right, b right, c wrong) is unchanged
  assert m["strategies"]["generator_rr_all"]["4"]["mean"] == pytest.approx(1 / 3)
  assert m["strategies"]["rr_all"]["4"]["mean"] == pytest.approx(2 / 3)
  assert m["generator_likelihood"]["within_problem_auc"] < 0.5 < m["evaluator"]["within_problem_auc"]
  assert "generator likelihood (control)" in open(tmp_path / "control" / "report.md").read()
