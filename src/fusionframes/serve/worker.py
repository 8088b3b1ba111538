"""The worker threads that run queued jobs (in ``fusionframes serve`` or ``fusionframes worker``).

Each worker thread loads the model once and takes jobs one at a time. Cancelling sets a flag that the
progress callback checks at every denoising step; it raises ``GenerationCancelled``, so a cancelled job
stops within one step and the worker is free for the next job. With a shared store (PostgreSQL) a
heartbeat thread renews the leases of the jobs running here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fusionframes.serve.adapters import AdapterRoot, attached
from fusionframes.serve.runners import (  # noqa: F401 - also offered here
    MODES,
    RUNNERS,
    Limits,
    Pipelines,
    ProgressCallback,
    field_of,
    json_friendly,
    prepare,
)
from fusionframes.serve.store import Job, StorageError, StoreBase, storage_problem

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- progress


class Progress:
    """Per-stage steps of a running job and the overall fraction (stages weighted by their steps)."""

    def __init__(self, planned: list[tuple[str, int]]) -> None:
        self.stages = [{"name": name, "step": 0, "total": max(1, int(total))} for name, total in planned]
        self.stage: str | None = None

    def update(self, stage: str, step: int, total: int) -> bool:
        """Record a callback; stages run in order, so earlier ones are complete. True on a new stage."""
        names = [entry["name"] for entry in self.stages]
        if stage not in names:
            self.stages.append({"name": stage, "step": 0, "total": 1})
            names.append(stage)
        index = names.index(stage)
        for entry in self.stages[:index]:
            entry["step"] = entry["total"]
        entry = self.stages[index]
        entry["total"] = max(1, int(total))
        entry["step"] = max(0, min(int(step), entry["total"]))
        changed = stage != self.stage
        self.stage = stage
        return changed

    def complete(self) -> None:
        for entry in self.stages:
            entry["step"] = entry["total"]

    def fraction(self) -> float:
        total = sum(entry["total"] for entry in self.stages)
        return sum(entry["step"] for entry in self.stages) / total if total else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "stages": [dict(entry) for entry in self.stages],
            "fraction": round(self.fraction(), 4),
        }


# ---------------------------------------------------------------------------------------------- workers


class _ShuttingDown(Exception):
    """Marks a job interrupted by server shutdown (it goes back to the queue)."""


class _LeaseLost(Exception):
    """Marks a job whose lease ran out (another worker may run it now): this worker drops it."""


@dataclass
class WorkerState:
    index: int
    state: str = "loading"  # loading | idle | busy | error | stopped
    job: str | None = None
    error: str | None = None


class WorkerPool:
    """``count`` threads, each with its own pipeline, taking jobs from the store in queue order."""

    def __init__(
        self,
        store: StoreBase,
        config: Any,
        limits: Limits,
        model: Any = None,
        device: str = "auto",
        dtype: str = "auto",
        count: int = 1,
        loader: Callable[[], Any] | None = None,
        threads: int | None = None,
        adapters: AdapterRoot | None = None,
    ) -> None:
        self.store = store
        self.adapters = adapters  # where a job's ``lora`` folders are (None: jobs take no adapters)
        self.config = config
        self.limits = limits
        self.loader = loader or (lambda: Pipelines(model, device, dtype, threads))
        self.states = [WorkerState(i) for i in range(count)]
        self._threads: list[threading.Thread] = []
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._cancel: dict[str, threading.Event] = {}
        self._pending: dict[str, str | None] = {}  # job id -> error (None: cancelled), not yet written
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._loaded = 0
        self._all_loaded = threading.Event()
        self._lost: set[str] = set()  # jobs whose lease this process lost

    # -- control -------------------------------------------------------------------------------------

    def start(self) -> None:
        for state in self.states:
            thread = threading.Thread(
                target=self._loop, args=(state,), name=f"worker-{state.index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if self.store.leases and self.states:
            beat = threading.Thread(target=self._heartbeats, name="worker-heartbeat", daemon=True)
            beat.start()
            self._threads.append(beat)

    def _heartbeats(self) -> None:
        """Renew the leases of the jobs running here every third of a lease; a job whose lease is
        gone (the store was unreachable longer than a lease) is stopped at its next step."""
        interval = max(0.2, getattr(self.store, "lease_s", 30.0) / 3)
        while not self._stopping.wait(interval):
            with self._lock:
                running = list(self._cancel)
            if not running:
                continue
            try:
                owned = self.store.heartbeat(running)
            except Exception as error:  # the store is away: try again next beat, the lease may hold
                self._store_failed(error)
                continue
            for job_id in set(running) - owned:
                logger.warning("job %s: lease lost; another worker may run it now", job_id)
                with self._lock:
                    self._lost.add(job_id)
                    flag = self._cancel.get(job_id)
                if flag is not None:
                    flag.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Interrupt running jobs within a step (they are re-queued) and wait for the threads."""
        self._stopping.set()
        self.notify()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        """Stop a job running here at its next denoising step."""
        with self._lock:
            flag = self._cancel.get(job_id)
        if flag is not None:
            flag.set()

    def is_running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._cancel

    @property
    def ready(self) -> bool:
        return any(state.state in ("idle", "busy") for state in self.states)

    # -- the loop ------------------------------------------------------------------------------------

    def _load(self, state: WorkerState) -> Any:
        """Workers load one after another, and none starts a job before all have loaded: model
        loading (transformers) touches process-wide state that is not safe next to other threads."""
        try:
            with self._load_lock:
                return self.loader()
        except Exception as error:  # reported by /api/health; queued jobs wait for a fixed server
            logger.exception("worker %d: cannot load the model", state.index)
            state.state, state.error = "error", f"{type(error).__name__}: {error}"
            return None
        finally:
            with self._lock:
                self._loaded += 1
                if self._loaded == len(self.states):
                    self._all_loaded.set()

    def _loop(self, state: WorkerState) -> None:
        pipes = self._load(state)
        if pipes is None:
            return
        while not self._all_loaded.wait(timeout=0.5):
            if self._stopping.is_set():
                return
        state.state = "idle"
        while not self._stopping.is_set():
            try:
                job = self.store.claim() if self._settle() else None
            except Exception as error:  # the store failed: report it, keep the thread, try again
                self._store_failed(error)
                job = None
            if job is None:
                with self._wake:
                    self._wake.wait(timeout=1.0)
                continue
            state.state, state.job = "busy", job.id
            try:
                self._run(job, pipes)
            except Exception as error:  # never lose the worker to one job (the job is settled later)
                logger.exception("worker %d: job %s", state.index, job.id)
                self._defer(job.id, f"{type(error).__name__}: {error}")
            finally:
                state.state, state.job = "idle", None
        state.state = "stopped"

    # -- store failures ------------------------------------------------------------------------------

    def _store_failed(self, error: BaseException) -> None:
        problem = storage_problem(error)
        if problem is not None:
            self.store.health.failed(problem)
            logger.warning("data dir not writable: %s", problem)
        else:
            logger.exception("job store error")

    def _defer(self, job_id: str, error: str | None) -> None:
        """A job's end could not be recorded (the disk is full): record it once the store writes
        (``error`` None: cancelled; else failed with that error)."""
        with self._lock:
            self._pending[job_id] = error

    def _settle(self) -> bool:
        """True when the store takes writes: probes a broken store (at most once a second), then
        records the ends that could not be written. False while it still cannot write."""
        if self.store.writable() is not None:
            return False
        with self._lock:
            pending = list(self._pending.items())
        for job_id, error in pending:
            self.store.remove_files(job_id)
            if error is None:
                self.store.mark_cancelled(job_id)
            else:
                self.store.fail(job_id, error)  # raises StorageError again if the disk filled up again
            with self._lock:
                self._pending.pop(job_id, None)
        return True

    @property
    def storage_error(self) -> StorageError | None:
        return self.store.health.problem

    def _callback(self, job: Job, flag: threading.Event, progress: Progress) -> ProgressCallback:
        """Per step: stop on shutdown, a lost lease or a cancel (this process's flag, or the store's
        for a cancel made through another process, read every ``cancel_poll`` s); record progress
        (written to the store on stage changes, and every ``progress_interval`` s for stores that
        other processes read)."""
        from fusionframes.pipelines.text_to_video import GenerationCancelled

        poll, interval = self.store.cancel_poll, self.store.progress_interval
        last = {"poll": time.monotonic(), "write": time.monotonic()}

        def callback(stage: str, step: int, total: int) -> None:
            if self._stopping.is_set():
                raise GenerationCancelled("server shutting down") from _ShuttingDown()
            now = time.monotonic()
            if poll is not None and not flag.is_set() and now - last["poll"] >= poll:
                last["poll"] = now
                if self._tolerant(self.store.cancel_requested, job.id):
                    flag.set()
            if flag.is_set():
                with self._lock:
                    lost = job.id in self._lost
                if lost:
                    raise GenerationCancelled(f"job {job.id}: lease lost") from _LeaseLost()
                raise GenerationCancelled(f"job {job.id} cancelled")
            changed = progress.update(stage, step, total)
            persist = changed or (interval is not None and now - last["write"] >= interval)
            if persist:
                last["write"] = now
            self._tolerant(self.store.set_progress, job.id, progress.snapshot(), persist)

        return callback

    def _tolerant(self, call: Callable[..., Any], *args: Any) -> Any:
        """A progress write or cancel read of a shared store: while its database is away (not full)
        the job goes on (its lease covers the gap; the heartbeat says if it was lost)."""
        try:
            return call(*args)
        except StorageError as error:
            if error.full or not self.store.leases:
                raise
            return None

    def _retrying(self, call: Callable[..., Any], *args: Any) -> Any:
        """Record a job's end through a database restart: retried for up to half a lease."""
        deadline = time.monotonic() + getattr(self.store, "lease_s", 0.0) / 2
        while True:
            try:
                return call(*args)
            except StorageError as error:
                if error.full or not self.store.leases or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _run(self, job: Job, pipes: Any) -> None:
        from fusionframes.pipelines.text_to_video import GenerationCancelled

        flag = threading.Event()
        with self._lock:
            self._cancel[job.id] = flag
        if self._tolerant(self.store.cancel_requested, job.id):  # cancelled between claim and here
            flag.set()
        progress = Progress([])
        try:
            prepared = prepare(self.config, job.mode, job.params, self.limits)
            if job.params.get("image") is not None:
                prepared.inputs["image"] = self._input_image(job)
            progress = Progress(prepared.stages)
            self.store.set_progress(job.id, progress.snapshot(), persist=True)
            with self._adapters(pipes, job):
                output = RUNNERS[job.mode].run(pipes, prepared, self._callback(job, flag, progress))
            polled = self.store.cancel_poll is not None and self._tolerant(
                self.store.cancel_requested, job.id
            )
            if flag.is_set() or polled:
                with self._lock:
                    lost = job.id in self._lost
                raise GenerationCancelled(f"job {job.id} cancelled") from (_LeaseLost() if lost else None)
            progress.complete()
            self._finish(job, output, progress)
        except GenerationCancelled as error:
            self._interrupted(job, error)
        except Exception as error:
            problem = storage_problem(error)
            if problem is not None and not problem.full and self.store.leases:
                # The shared database went away (a restart): the job is not at fault. Drop the claim;
                # its lease runs out and a worker runs it again once the database is back.
                self.store.health.failed(problem)
                getattr(self.store, "release", lambda _: None)(job.id)
                logger.warning("job %s left to its lease (%s)", job.id, problem)
                return
            if problem is not None:
                self.store.health.failed(problem)
                message = f"{problem}; the job was stopped (free space on the server and run it again)"
            else:
                logger.exception("job %s failed", job.id)
                message = f"{type(error).__name__}: {error}"
            try:
                self.store.remove_files(job.id)
                self.store.fail(job.id, message)
            except Exception as again:  # the store cannot record it now: retried by _settle
                self._store_failed(again)
                self._defer(job.id, message)
        finally:
            with self._lock:
                self._cancel.pop(job.id, None)
                self._lost.discard(job.id)

    def _adapters(self, pipes: Any, job: Job) -> Any:
        """The job's ``lora`` adapters on this worker's networks for the job only (none: a no-op)."""
        entries = job.params.get("lora")
        components = pipes.t2v.lora_components if entries else None
        return attached(components, entries, self.adapters)

    def _input_image(self, job: Job) -> Any:
        """The image a job was given, from the store (any host's worker reads it there)."""
        from fusionframes.serve.parameters import open_image

        data = self.store.input_image(job.id)
        if data is None:
            raise ValueError(f"image: job {job.id}'s image is missing from the job store")
        return open_image(data)

    def _interrupted(self, job: Job, error: Exception) -> None:
        if isinstance(error.__cause__, _LeaseLost):  # not ours any more: touch neither row nor files
            getattr(self.store, "release", lambda _: None)(job.id)
            logger.info("job %s dropped (lease lost)", job.id)
            return
        self.store.remove_files(job.id)
        try:
            if isinstance(error.__cause__, _ShuttingDown):
                self.store.requeue(job.id)
                logger.info("job %s re-queued (shutdown)", job.id)
            else:
                self.store.mark_cancelled(job.id)
                logger.info("job %s cancelled", job.id)
        except StorageError as again:  # a running job found at the next start is re-queued anyway
            self._store_failed(again)
            if not isinstance(error.__cause__, _ShuttingDown):
                self._defer(job.id, None)

    def _finish(self, job: Job, output: Any, progress: Progress) -> None:
        """Write every requested format (each atomically), then mark the job done."""
        for fmt in job.formats:
            output.save(self.store.output_path(job.id, fmt))
        files = self.store.artifacts.publish(job.id, job.formats)  # visible only once complete
        frames = output.frames
        height, width = frames.shape[1:3]
        result = {
            "num_frames": int(len(frames)),
            "fps": float(output.fps),
            "duration": float(len(frames) / output.fps),
            "width": int(width),
            "height": int(height),
            "files": files,
            "metadata": json_friendly(output.metadata()),
        }
        try:
            finished = self._retrying(self.store.finish, job.id, result, progress.snapshot())
        except StorageError:
            self.store.remove_files(job.id)  # not recorded: no orphan files; _run fails the job
            raise
        if not finished and not self.store.exists(job.id):
            self.store.remove_files(job.id)  # deleted while it ran (else: another claim holds it)
