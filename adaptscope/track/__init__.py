"""Tracking: evaluating a generator under a protocol at scheduled iterations and recording it.

The run folder's one owner (`rundir`), the target a run measures against (`target`), the
backbone resolver (`backbones`), the evaluator, the tracker (the only writer of trajectories),
the parquet store and `track` of checkpoints trained elsewhere. Knows nothing of training.
"""
