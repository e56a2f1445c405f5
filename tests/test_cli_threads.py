"""The CLI's default thread count: affinity, cgroup quota, machine load, OMP_NUM_THREADS, --threads."""

from __future__ import annotations

import os

import pytest
import torch

from worldstereo import cli


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """8 CPUs in the affinity mask, no cgroup limit, an idle machine; tweak per test."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    return tmp_path  # an empty cgroup root


def test_idle_machine_uses_every_allowed_cpu(machine):
    assert cli.available_cpus(machine) == 8
    assert cli.default_threads(machine) == 8


def test_cgroup_quota_caps_the_cpus(machine):
    (machine / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs
    assert cli.available_cpus(machine) == 3
    (machine / "cpu.max").write_text("max 100000\n")
    assert cli.available_cpus(machine) == 8
    (machine / "cpu.max").unlink()
    (machine / "cpu").mkdir()
    (machine / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")  # cgroup v1: 2 CPUs
    (machine / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cli.available_cpus(machine) == 2


def test_busy_machine_gets_fewer_threads(machine, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (5.4, 5.0, 4.0))
    assert cli.default_threads(machine) == 3  # 8 CPUs, about 5 busy
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert cli.default_threads(machine) == 1  # overloaded: never below one


def test_omp_num_threads_is_respected(machine, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cli.default_threads(machine) is None  # torch already follows it


def test_main_applies_and_restores_the_thread_count(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(cli, "default_threads", lambda: 1)
    before = torch.get_num_threads()
    real_set = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real_set(n)))
    assert cli.main(["demo", "--out", "x", "--height", "17"]) == 2  # bad input: fails after threads are set
    assert seen[0] == 1 and torch.get_num_threads() == before
    seen.clear()
    assert cli.main(["--threads", "2", "demo", "--out", "x", "--height", "17"]) == 2
    assert seen[0] == 2
