"""glibc malloc tuning: takes effect where there is glibc, a no-op elsewhere."""
import sys

import pytest

from fastlic.runtime import memory


def test_keep_freed_memory_takes_both_settings_on_glibc():
    if memory._glibc() is None:
        pytest.skip("no glibc in this process")
    assert memory.keep_freed_memory() is True
    assert memory.keep_freed_memory(mmap_threshold=2**40) is True   # clamped, not refused


def test_without_glibc_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.keep_freed_memory() is False


def test_not_linux_means_no_glibc(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert memory._glibc() is None
