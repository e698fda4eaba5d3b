"""Re-ranking: selection strategies, subset estimators and CIs (`metrics`, numpy only) and the `mathft-rerank` job
(`rerank`: grading, metrics.json, report.md, the accuracy-vs-N plot, graded.jsonl). No JAX or TensorFlow."""
