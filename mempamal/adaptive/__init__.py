"""Adaptive search in rounds, with no controller alive and no database.

A *suggest* task rebuilds an Optuna study in memory from the files of the
finished trials (``tell``), asks for the next batch (``ask``) and writes it
atomically; the trials of that round read their candidate from it. The
sampler's own state (its random generators, CMA-ES's optimizer, QMC's
position in its sequence) travels in those files too, so a study rebuilt
round after round asks exactly what one Optuna study kept alive and driven
by ask/tell in the same rounds would. Everything is a function of
``random_state`` and the earlier rounds' files: a suggest task run again
after a crash writes the same file.

Optuna is an optional extra (``mempamal[optuna]``), imported in suggest
tasks and at compile time (to check the space) only.
"""

from .space import SEARCHES, check_search, to_optuna
from .suggest import Finished, suggest_batch

__all__ = ["SEARCHES", "Finished", "check_search", "suggest_batch", "to_optuna"]
