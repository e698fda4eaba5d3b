"""The recipe's judge: answer extraction, normalization, safe time-bounded equivalence, clustering.

Importable without JAX or TensorFlow (sympy and latex2sympy2_extended only).
"""
from mathft_jax.grading.equivalence import answer_key, cluster, grade, is_equivalent
from mathft_jax.grading.extract import extract_answer
from mathft_jax.grading.normalize import normalize

__all__ = ["answer_key", "cluster", "extract_answer", "grade", "is_equivalent", "normalize"]
