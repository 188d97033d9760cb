"""Data-parallel extraction: one run written by several processes (torch.distributed ranks).

    torchrun --nproc-per-node 4 -m lensdb extract MODEL ...

torchrun (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT) starts one process per device. Every rank loads the model (cuda:LOCAL_RANK
on GPUs), tokenizes every prompt and builds the batches a one-process run builds; the
batches are then dealt out by token count (`deal`), so every batch holds the same prompts
as in a one-process run and the records are the same. The run commits once:

    rank 0  picks the run id and opens the staging folder; every rank joins it
    each    runs its share of the batches into files of its own (part-rank<R>-...)
    all     vote: one all_gather of (ok or error, last-layer check, row counts)
    rank 0  every rank succeeded: combines the check, writes the manifest and commits;
            any rank failed: removes the staging folder; then every rank learns the outcome

A rank that dies outright (killed, out of memory) never votes: torchrun stops the other
ranks, or the vote times out (VOTE_TIMEOUT); nothing is committed, and the next extract
on rank 0's host removes the staging folder left behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import torch

from lensdb.errors import LensdbError
from lensdb.extract.pipeline import LastLayerCheck
from lensdb.warehouse import layout
from lensdb.warehouse.writer_base import TableWriter

VOTE_TIMEOUT = timedelta(minutes=30)  # how long a rank that finished waits for the others
T = TypeVar("T")


@dataclass(frozen=True)
class RankReport:
    """What each rank tells the others at the vote."""

    rank: int
    error: str | None  # one line; None: the rank's share is written and closed
    check: tuple[float, int, int] = (0.0, 0, 0)  # last-layer max KL bits, agreeing prompts, prompts
    rows: dict[str, int] = field(default_factory=dict)  # rows written, by table


@dataclass
class Ranks:
    """This process's place in the group; a single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # the group was started here, so it is destroyed here

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def file_tag(self) -> str:
        """Inserted in this rank's Parquet file names (none for a single process)."""
        return f"-rank{self.rank}" if self.distributed else ""

    def placement(self, chosen):
        """Each rank runs the whole model on its own GPU, cuda:LOCAL_RANK (device.Placement)."""
        if not self.distributed or chosen.device_type != "cuda":
            return chosen
        if chosen.single_device is None:
            raise LensdbError("under torchrun every rank runs the whole model on its own GPU: drop --device-map/--max-memory")
        from dataclasses import replace

        return replace(chosen, device_map={"": f"cuda:{self.local_rank}"}, reason=f"rank {self.rank}: cuda:{self.local_rank}")

    def share(self, costs: Sequence[int]) -> list[int]:
        """Indices of the batches (with these costs) that this rank runs."""
        return deal(costs, self.world_size)[self.rank]

    def from_leader(self, compute: Callable[[], T]) -> T:
        """`compute()` on rank 0; its value on every rank, or its error raised on every rank."""
        if not self.distributed:
            return compute()
        import torch.distributed as dist

        payload: list = [None]
        error = None
        if self.leader:
            try:
                payload[0] = ("ok", compute())
            except BaseException as exc:  # noqa: BLE001 - raised again below, after the others know
                error = exc
                payload[0] = ("error", describe_error(exc))
        dist.broadcast_object_list(payload, src=0)
        if error is not None:
            raise error
        status, value = payload[0]
        if status == "error":
            raise LensdbError(f"rank 0 failed: {value}")
        return value

    def gather(self, report: RankReport) -> list[RankReport]:
        """Every rank's report, in rank order."""
        if not self.distributed:
            return [report]
        import torch.distributed as dist

        reports: list = [None] * self.world_size
        dist.all_gather_object(reports, report)
        return reports

    def vote(self, report: RankReport, error: BaseException | None, abandon: Callable[[], None]) -> list[RankReport]:
        """Every rank's report; if any rank failed, rank 0 calls `abandon()` (removing the
        staging folder) before every rank raises: its own error, or the failed rank's."""
        reports = self.gather(report)
        failed = [r for r in reports if r.error is not None]
        if failed:
            if self.leader:
                abandon()
            self.barrier()  # the staging folder is gone before any rank exits
            if error is not None:
                raise error
            raise LensdbError(f"rank {failed[0].rank} failed: {failed[0].error}; nothing was committed")
        return reports

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owns_group = False

    def __enter__(self) -> "Ranks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def from_environment(requested_device: str = "auto") -> Ranks:
    """The group torchrun describes in the environment (WORLD_SIZE > 1), joined; else one process.

    The group uses NCCL when the run may use CUDA, else gloo; a group the caller already
    started is used as it is."""
    world_size = int(os.environ.get("WORLD_SIZE") or 1)
    if world_size <= 1:
        return Ranks()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK") or 0)
    owns = False
    if not dist.is_initialized():
        use_cuda = requested_device in ("auto", "cuda") and torch.cuda.is_available()
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend, timeout=VOTE_TIMEOUT)
        except (ValueError, RuntimeError) as exc:
            raise LensdbError(f"cannot join the torch.distributed group (WORLD_SIZE={world_size}): {describe_error(exc)}") from None
        owns = True
    return Ranks(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        backend=str(dist.get_backend()),
        owns_group=owns,
    )


def shared_writer(ranks: Ranks, warehouse: Path, model: str, run_id: str | None) -> TableWriter:
    """The run's writer on this rank. Rank 0 opens a new staging folder (and picks the run id
    when `run_id` is None); every other rank gets a writer joining that folder, with its own
    file names. An error on rank 0 is raised on every rank."""
    opened: list[TableWriter] = []

    def open_staging():
        writer = layout.open_warehouse(warehouse).writer(model, run_id or layout.new_run_id(), file_tag=ranks.file_tag)
        writer.open()
        opened.append(writer)
        return writer.run_id, writer.share_name

    chosen_id, staging_name = ranks.from_leader(open_staging)
    if ranks.leader:
        return opened[0]
    return layout.open_warehouse(warehouse).joined_writer(model, chosen_id, staging_name, file_tag=ranks.file_tag)


def deal(costs: Sequence[int], n_ranks: int) -> list[list[int]]:
    """Batch indices for each rank, balanced by cost (tokens): the costliest batch first, each
    to the rank with the least so far (ties: the lower batch index, the lower rank). Every
    rank computes the same deal; each rank's batches stay in their original order."""
    loads = [0] * n_ranks
    shares: list[list[int]] = [[] for _ in range(n_ranks)]
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(n_ranks), key=lambda r: (loads[r], r))
        shares[rank].append(index)
        loads[rank] += costs[index]
    return [sorted(share) for share in shares]


def combined_check(reports: Sequence[RankReport], flag_threshold_bits: float) -> LastLayerCheck:
    """The last-layer check over every rank's prompts: the largest KL, the agreements summed."""
    return LastLayerCheck(
        flag_threshold_bits=flag_threshold_bits,
        max_kl_bits=max(report.check[0] for report in reports),
        agreeing=sum(report.check[1] for report in reports),
        prompts=sum(report.check[2] for report in reports),
    )


def summed_rows(reports: Sequence[RankReport]) -> dict[str, int]:
    rows: dict[str, int] = {}
    for report in reports:
        for table, count in report.rows.items():
            rows[table] = rows.get(table, 0) + count
    return rows


def describe_error(exc: BaseException) -> str:
    """One line: a LensdbError's message, else the exception's type and first line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if isinstance(exc, LensdbError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
