"""Default loader processes share the machine's CPUs among the training processes on it."""

from __future__ import annotations

import torch

from rs_search.train.loader import available_cpus, default_workers

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def test_gpu_workers_side_by_side_share_the_cpus() -> None:
    """8 GPU workers on 16 cores: 2 loader processes each (they used to start 8 each)."""
    assert default_workers(CUDA, processes=8, cpus=16) == 2
    assert default_workers(CUDA, processes=1, cpus=16) == 8  # at most 8 for one process
    assert default_workers(CUDA, processes=4, cpus=64) == 8
    assert default_workers(CUDA, processes=32, cpus=16) == 1  # never none on a GPU


def test_cpu_training_leaves_a_core_to_the_model() -> None:
    assert default_workers(CPU, processes=1, cpus=2) == 1
    assert default_workers(CPU, processes=2, cpus=2) == 0  # cores are scarce: load in-process
    assert default_workers(CPU, processes=1, cpus=64) == 4
    assert default_workers(CPU, processes=4, cpus=16) == 3


def test_the_share_is_of_this_process_s_cpus() -> None:
    cpus = available_cpus()
    assert cpus >= 1
    assert default_workers(CUDA, processes=1) == min(8, cpus)
