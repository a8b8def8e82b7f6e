"""Data parallelism: N processes, one model replica each, gradients averaged every step.

`torchrun --nproc_per_node=N -m groklm pretrain ...` starts N copies of the same program and
tells each its RANK and WORLD_SIZE through the environment. Each process draws the same global
batch (batches are a function of seed and step), computes the gradients of its own slice, and
DistributedDataParallel averages the gradients across processes during backward. Every replica
then takes the same optimizer step and the models stay identical. Only rank 0 writes files.

Sequence parallelism (TrainConfig.sequence_parallel, pretraining a GPT) splits the other way:
every process takes the same batch rows, and its own contiguous 1/N of each sequence (ring
attention, groklm/model/ring_attention.py, lets its queries see the earlier processes' keys).
There is then one data-parallel replica, however many processes: data_rank and data_world say
how the batches are shared out, sequence_shards how many processes share each sequence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    sequence_parallel: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def data_rank(self) -> int:
        """This process's place among those that take different batches."""
        return 0 if self.sequence_parallel else self.rank

    @property
    def data_world(self) -> int:
        """How many processes take different batches (the micro-batches are shared among them)."""
        return 1 if self.sequence_parallel else self.world_size

    @property
    def sequence_shards(self) -> int:
        """Into how many slices each sequence is split: a loss summed over the processes counts
        every batch this many times (once per slice)."""
        return self.world_size if self.sequence_parallel else 1

    def sequence_group(self) -> dist.ProcessGroup:
        """A process group of its own for ring attention's sends and receives (every process
        must call this, in the same order). DDP all-reduces gradients on the default group while
        backward is still running, and backward is where the ring passes gradients round: on
        separate groups the two streams of messages cannot be matched up with each other's."""
        return dist.new_group(list(range(self.world_size)))

    @classmethod
    def from_env(cls) -> "Distributed":
        """Read torchrun's environment (a plain `python -m groklm` is a world of one)."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
        )

    def start(self, device: torch.device) -> None:
        """Join the process group: NCCL between GPUs, gloo between CPU processes."""
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor over all processes (in place; a no-op for one process)."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor
