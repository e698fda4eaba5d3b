"""Token sequences -> the model's features: next-token rows, packed or padded, single or in (correct, incorrect) pairs.

An example's "inputs" (the prompt, starting with the tokenizer's start id, see `mathft_jax.text.tokenizer`) and
"targets" (the solution, ending in EOS) form one sequence `seq`; the model reads seq[:-1] and is trained to predict
seq[1:], with loss weight 1 on the target tokens only. Each feature is [L] (or [2, L] for pairs), L = inputs +
targets length:
  decoder_input_tokens, decoder_target_tokens, decoder_loss_weights, decoder_segment_ids (0 = padding; packed
  examples count 1, 2, ...), decoder_positions (0 at each example's first token).
Unlike seqio's decoder converters, nothing is put before the prompt (they shift right with id 0, which for most
tokenizers is a real token), and id 0 inside a sequence is a token, not padding.
"""
from typing import Mapping

from mathft_jax.data.quiet_tf import seqio, tf

FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights", "decoder_segment_ids",
            "decoder_positions")
_ROW = FEATURES[:3]
PAIR_FEATURES = ("inputs_pos", "targets_pos", "inputs_neg", "targets_neg")


def next_token_row(inputs: tf.Tensor, targets: tf.Tensor) -> dict:
  """Unpadded [n - 1] input/target/weight features of the sequence inputs + targets (n tokens)."""
  seq = tf.concat([inputs, targets], 0)
  weights = tf.concat([tf.zeros_like(inputs), tf.ones_like(targets)], 0)
  return {"decoder_input_tokens": seq[:-1], "decoder_target_tokens": seq[1:], "decoder_loss_weights": weights[1:]}


def pad_row(row: dict, length: int) -> dict:
  """An unpadded row -> every feature of FEATURES, [length] (longer rows are cut)."""
  row = {k: v[:length] for k, v in row.items()}
  n = tf.size(row["decoder_input_tokens"])
  pad = [[0, length - n]]
  out = {k: tf.pad(v, pad) for k, v in row.items()}
  out["decoder_segment_ids"] = tf.pad(tf.ones([n], tf.int32), pad)
  out["decoder_positions"] = tf.pad(tf.range(n), pad)
  return out


def pack_rows(ds: tf.data.Dataset, length: int) -> tf.data.Dataset:
  """Packs unpadded rows greedily into [length] rows with segment ids and positions.

  seqio's packer takes id 0 for padding (it counts non-zero ids), so every value is shifted by one around it."""
  shifted = ds.map(lambda row: {k: row[k] + 1 for k in _ROW}, num_parallel_calls=tf.data.AUTOTUNE)
  packed = seqio.utils.trim_and_pack_dataset(shifted, {k: length for k in _ROW})

  def unshift(x):
    segments = x["decoder_input_tokens_segment_ids"]
    out = {k: tf.where(segments > 0, x[k] - 1, 0) for k in _ROW}
    return {**out, "decoder_segment_ids": segments, "decoder_positions": x["decoder_input_tokens_positions"]}
  return packed.map(unshift, num_parallel_calls=tf.data.AUTOTUNE)


class NextTokenFeatureConverter(seqio.FeatureConverter):
  """inputs, targets -> FEATURES of length inputs + targets length, packed (`pack=True`) or one example a row."""
  TASK_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in ("inputs", "targets")}
  MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in FEATURES}
  PACKING_FEATURE_DTYPES = {}

  def _convert_features(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = sum(task_feature_lengths.values())
    rows = ds.map(lambda ex: next_token_row(ex["inputs"], ex["targets"]), num_parallel_calls=tf.data.AUTOTUNE)
    if self.pack:
      return pack_rows(rows, length)
    return rows.map(lambda row: pad_row(row, length), num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> Mapping[str, int]:
    return {k: sum(task_feature_lengths.values()) for k in FEATURES}


class PairFeatureConverter(seqio.FeatureConverter):
  """(inputs|targets)_(pos|neg) -> FEATURES of shape [2, inputs+targets length]; row 0 = the correct one."""
  TASK_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32) for k in PAIR_FEATURES}
  MODEL_FEATURES = {k: seqio.FeatureConverter.FeatureSpec(dtype=tf.int32, rank=2) for k in FEATURES}
  PACKING_FEATURE_DTYPES = {}

  def __init__(self):
    super().__init__(pack=False)

  def __call__(self, ds: tf.data.Dataset, task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = task_feature_lengths["inputs_pos"] + task_feature_lengths["targets_pos"]

    def convert(ex):
      pos, neg = (pad_row(next_token_row(ex[f"inputs_{side}"], ex[f"targets_{side}"]), length)
                  for side in ("pos", "neg"))
      return {k: tf.stack([pos[k], neg[k]]) for k in pos}

    return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)

  def _convert_features(self, ds, task_feature_lengths):
    raise NotImplementedError("PairFeatureConverter overrides __call__")

  def get_model_feature_lengths(self, task_feature_lengths):
    length = task_feature_lengths["inputs_pos"] + task_feature_lengths["targets_pos"]
    return {k: length for k in self.MODEL_FEATURES}
