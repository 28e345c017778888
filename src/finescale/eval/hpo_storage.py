"""The study's storage and its bookkeeping for ``finescale hpo``: RDB storage with a heartbeat (a trial of a dead
process becomes FAIL and is retried once, as a WAITING trial with the same parameters), stale trials failed before
each new trial, and what a study still owes (finished + running + waiting against the trials asked)."""

from __future__ import annotations

import inspect
import logging
import os
import random
import time
import warnings

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from finescale.errors import FinescaleError

log = logging.getLogger("finescale")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

try:  # Optuna >= 4.9 renamed the callback and its RDBStorage argument
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _RetryCallback
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _RetryCallback
_CALLBACK_ARG = (
    "heartbeat_stale_trial_callback"
    if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage.__init__).parameters
    else "failed_trial_callback"
)


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in whole seconds: ``FINESCALE_HPO_HEARTBEAT_S`` (default 30) and
    ``FINESCALE_HPO_GRACE_S`` (default three intervals). A running trial whose last heartbeat is older than the grace
    period is taken for dead: keep the grace period well above the interval, or a busy live trial may be failed."""
    try:
        interval = int(os.environ.get("FINESCALE_HPO_HEARTBEAT_S", "30"))
        grace = int(os.environ.get("FINESCALE_HPO_GRACE_S", str(3 * interval)))
    except ValueError as err:
        raise FinescaleError(f"FINESCALE_HPO_HEARTBEAT_S, FINESCALE_HPO_GRACE_S: whole seconds, not {err}") from None
    if interval <= 0 or grace <= interval:
        raise FinescaleError(f"need 0 < FINESCALE_HPO_HEARTBEAT_S < FINESCALE_HPO_GRACE_S, got {interval}, {grace}")
    return interval, grace


def storage_for(url: str) -> RDBStorage:
    """RDB storage with a heartbeat: trials of a dead process become FAIL and are retried once (as a WAITING trial
    with the same parameters, which the next ``ask`` of any process takes)."""
    interval, grace = heartbeat_settings()
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                kwargs = {_CALLBACK_ARG: _RetryCallback(max_retry=1)}
                return RDBStorage(url, heartbeat_interval=interval, grace_period=grace, **kwargs)
        except sqlalchemy.exc.SQLAlchemyError:
            # several machines creating the tables of a new database at once: one wins, the others retry and load
            if attempt == 4:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark the running trials whose heartbeat is older than the grace period FAIL; the storage's callback enqueues
    each one's retry as a WAITING trial with the same parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class SilentTrials:
    """Finds RUNNING trials that never recorded a heartbeat: their process died between creating the trial (or
    taking a waiting retry) and the heartbeat thread's first beat, a window that a kill right after a finished
    trial hits. Optuna's stale check skips trials without a heartbeat, so these would count as running forever. A
    trial seen silent for longer than the grace period (timed here, so clocks of other machines do not matter) is
    marked FAIL and retried like a stale one."""

    _QUERY = sqlalchemy.text(
        "SELECT t.trial_id FROM trials t WHERE t.study_id = :study AND t.state = 'RUNNING' "
        "AND NOT EXISTS (SELECT 1 FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
    )

    def __init__(self, storage: RDBStorage) -> None:
        self.storage = storage
        self.since: dict[int, float] = {}

    def fail(self, study: optuna.Study) -> None:
        _, grace = heartbeat_settings()
        study_id = self.storage.get_study_id_from_name(study.study_name)
        try:
            with self.storage.engine.connect() as conn:
                silent = {row[0] for row in conn.execute(self._QUERY, {"study": study_id})}
        except sqlalchemy.exc.SQLAlchemyError as err:  # a busy SQLite file: look again on the next call
            log.debug("hpo: silent-trial check failed: %s", err)
            return
        now = time.monotonic()
        self.since = {trial_id: self.since.get(trial_id, now) for trial_id in silent}
        for trial_id, since in list(self.since.items()):
            if now - since <= grace:
                continue
            del self.since[trial_id]
            try:
                if not self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:  # another process got there first
                continue
            trial = self.storage.get_trial(trial_id)
            log.info("hpo: trial %d never sent a heartbeat in %d s; marked failed and retried", trial.number, grace)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                _RetryCallback(max_retry=1)(study, trial)


def owed(study: optuna.Study, silent: SilentTrials) -> dict[str, int]:
    """Trials per state after failing the dead ones (stale heartbeat, or none for longer than the grace period):
    ``finished`` (complete or pruned), ``running`` (in live processes here or elsewhere, or dead ones still within
    the grace period) and ``waiting`` (retries)."""
    fail_stale_trials(study)
    silent.fail(study)
    trials = study.get_trials(deepcopy=False)
    return {
        "finished": sum(t.state in FINISHED for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
        "waiting": sum(t.state == TrialState.WAITING for t in trials),
    }
