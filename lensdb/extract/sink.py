"""Stage 6, the writer: Arrow conversion and Parquet writes on a thread of their own.

The compute stages hand over jobs through a bounded queue and go on with the next chunk
(on a GPU, the next batch's forward pass) while this thread builds Arrow batches and
compresses Parquet (both release the GIL). A job's tensors are first copied to the host
without blocking (`to_host`); the job waits for that copy, not the producer.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from typing import Callable, Iterable

import torch

from lensdb.warehouse.writer_base import TableWriter

# One append: (table, Arrow batch or table, schema, part)
Append = tuple
Job = Callable[[], Iterable[Append]]
_STOP = object()


class RecordSink:
    """Runs jobs in order on one writer thread; `close()` waits for them all.

    An error in a job is raised again in the producer at its next `submit()` or at
    `close()`; leaving the `with` block on an error drops what is queued.
    """

    def __init__(self, writer: TableWriter, max_pending: int = 8):
        self.writer = writer
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="lensdb-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self._raise_if_failed()
        while True:
            try:
                self._queue.put(job, timeout=0.5)
                return
            except queue.Full:
                self._raise_if_failed()

    def close(self) -> None:
        """Wait for every queued job; raise the first error any of them hit."""
        self._queue.put(_STOP)
        self._thread.join()
        self._raise_if_failed()

    def __enter__(self) -> "RecordSink":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            return
        self._error = self._error or exc  # stop the thread: it skips what is still queued
        self._drain()
        self._queue.put(_STOP)
        self._thread.join()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            if self._error is not None:
                continue
            try:
                for table, data, schema, part in job():
                    self.writer.append(table, data, schema, part=part)
            except BaseException as exc:  # noqa: BLE001 - handed to the producer
                self._error = exc

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error


class HostCopy:
    """Tensors on their way to the host: `wait()` returns once the copies have landed."""

    def __init__(self, event):
        self._event = event

    def wait(self) -> None:
        if self._event is not None:
            self._event.synchronize()


def to_host(value):
    """Copy every tensor in `value` (a tensor, dataclass, dict, list or tuple of them) to the host.

    CUDA tensors go into pinned buffers with non-blocking copies; returns (copy, HostCopy).
    Host tensors are returned as they are.
    """
    copies: list[bool] = []
    result = _map_tensors(value, lambda t: _pinned_copy(t, copies))
    event = None
    if copies:
        event = torch.cuda.Event()
        event.record()
    return result, HostCopy(event)


def _pinned_copy(tensor: torch.Tensor, copies: list[bool]) -> torch.Tensor:
    if tensor.device.type != "cuda":
        return tensor
    copies.append(True)
    buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    buffer.copy_(tensor, non_blocking=True)
    return buffer


def _map_tensors(value, function):
    if isinstance(value, torch.Tensor):
        return function(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _map_tensors(getattr(value, f.name), function) for f in dataclasses.fields(value)}
        )
    if isinstance(value, dict):
        return {key: _map_tensors(item, function) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(item, function) for item in value)
    return value
