"""Orbax checkpoints of the full train state and the data iterator position, plus preemption handling.

Layout: MODEL_DIR/checkpoints/<step>/{state, data}. `state` is the whole TrainState (step, params, optimizer
state, RNG); `data` is JSON (batches consumed), so a resumed run reads exactly the batches an uninterrupted one
would. Saves are asynchronous; orbax finalizes a step directory only when it is complete, so a kill mid-save leaves
the previous checkpoint as the latest.
"""
import os
import signal
import threading
from typing import Optional

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Periodic async saves, keep the last `max_to_keep`, restore the latest."""

  def __init__(self, model_dir: str, save_every: int, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(model_dir) if "://" not in model_dir else model_dir,
                                  "checkpoints")
    options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=max_to_keep,
                                           enable_async_checkpointing=async_save, create=True,
                                           cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, force: bool = False) -> bool:
    """Saves if `step` is on the save interval (or `force`); returns whether a save started."""
    return self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                           data=ocp.args.JsonSave(data_state)), force=force)

  def restore(self, abstract_state, step: Optional[int] = None):
    """Restores (state, data_state) at `step` (default: latest) onto the shardings in `abstract_state`."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


class PreemptionGuard:
  """Turns SIGTERM (TPU preemption, job schedulers) into a flag the train loop checks after each step.

  With several processes, `should_stop` agrees across hosts (any host signalled -> all stop at the same step).
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self._flag.set())
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def should_stop(self) -> bool:
    local = self._flag.is_set()
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils
    return bool(multihost_utils.process_allgather(jax.numpy.array(local)).any())
