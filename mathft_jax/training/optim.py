"""Optimizers (AdamW, Adafactor) with gradient clipping, and learning-rate schedules with warmup."""
import dataclasses

import jax.numpy as jnp
import optax


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Linear warmup from 0 to `peak`, then "constant", "cosine" (to min_ratio * peak at total_steps) or "rsqrt"
  (peak * sqrt(warmup / step))."""
  kind: str = "constant"
  peak: float = 1e-5
  warmup_steps: int = 0
  total_steps: int = 0
  min_ratio: float = 0.0


def make_schedule(cfg: ScheduleConfig) -> optax.Schedule:
  warmup = max(cfg.warmup_steps, 0)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    ramp = jnp.minimum(1.0, (step + 1) / warmup) if warmup else 1.0
    if cfg.kind == "constant":
      decay = 1.0
    elif cfg.kind == "cosine":
      span = max(cfg.total_steps - warmup, 1)
      progress = jnp.clip((step - warmup) / span, 0.0, 1.0)
      decay = cfg.min_ratio + (1 - cfg.min_ratio) * 0.5 * (1 + jnp.cos(jnp.pi * progress))
    elif cfg.kind == "rsqrt":
      decay = jnp.sqrt(max(warmup, 1) / jnp.maximum(step + 1, max(warmup, 1)))
    else:
      raise ValueError(f"unknown schedule kind {cfg.kind!r}: expected constant, cosine or rsqrt")
    return cfg.peak * ramp * decay

  if cfg.kind not in ("constant", "cosine", "rsqrt"):
    raise ValueError(f"unknown schedule kind {cfg.kind!r}: expected constant, cosine or rsqrt")
  return schedule


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """name: "adamw", "adafactor" or "sgd". clip_norm: global gradient-norm clipping (0 = off)."""
  name: str = "adamw"
  schedule: ScheduleConfig = ScheduleConfig()
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  lr = make_schedule(cfg.schedule)
  if cfg.name == "adamw":
    opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay)
  elif cfg.name == "adafactor":
    opt = optax.adafactor(lr, weight_decay_rate=cfg.weight_decay or None)
  elif cfg.name == "sgd":
    opt = optax.sgd(lr)
  else:
    raise ValueError(f"unknown optimizer {cfg.name!r}: expected adamw, adafactor or sgd")
  if cfg.clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
  return opt
