"""Training Fast R-CNN: single-stage, multi-task, from a run folder that resumes exactly.

One module per job:

* :mod:`.settings` -- :class:`~.settings.TrainSettings`, every number of the procedure, each field with its
  default, help text and range (the command line's options are generated from them); the recipes fill what is
  left unset (:mod:`fastrcnn_cli.recipes`).
* :mod:`.validation` -- which images validate the run (``val``, a fixed held-out part, a named split, none).
* :mod:`.data` -- the epoch order, each image prepared (flip, scale, jitter, RoI sampling), all seeded by place,
  and the DataLoader whose worker processes prepare the batches.
* :mod:`.solver` -- SGD with its parameter groups, the step schedule and warm-up, gradient norms.
* :mod:`.trainer` -- :class:`~.trainer.Trainer`: set-up, one iteration, checkpoints, the loop.
* :mod:`.hooks` -- around the loop: progress, metrics rows and log lines, evaluation (the shared pipeline,
  :mod:`fastrcnn_cli.pipeline`), checkpoints and the run folder, Ctrl-C; :mod:`.budget` -- the time budget.
* :mod:`.metrics` and :mod:`.plots` -- ``metrics.csv`` and ``loss.png`` / ``health.png`` / ``map.png``.
* :mod:`.distributed` -- data-parallel training under ``torchrun``.

:func:`fastrcnn_cli.train.train` starts or resumes a run. This package's ``__init__`` imports nothing, so that
the command line can read the settings without loading torch.
"""
