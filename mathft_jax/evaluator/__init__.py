"""The evaluator of the recipe (Liu et al. 2023): its (correct, incorrect) pairs from graded samples (`pairs`) and
its losses (`losses`: the pairwise margin on log S and the sequence-likelihood contrastive loss). No TensorFlow."""
