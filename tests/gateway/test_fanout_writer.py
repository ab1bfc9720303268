"""`FanOut`: one frame written to many non-blocking sockets by the calling thread and a helper, every byte once,
and every write that could not finish reported with how far it got (real socket pairs, no fakes)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ccsm_gateway.fanout import FanOut, usable_cores, write_chunks


@contextlib.contextmanager
def socket_pairs(n: int, sndbuf: int | None = None) -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        for ours, _ in pairs:
            ours.setblocking(False)  # as the event loop's transports keep them
            if sndbuf is not None:
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        yield pairs
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


def drain(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := sock.recv(1 << 20):
            out += chunk
    return out


@pytest.mark.parametrize("helpers", [0, 1, 2])
def test_every_socket_receives_the_frame_exactly_once(helpers: int) -> None:
    fanout = FanOut(helpers=helpers, split_at=0, chunk=7)  # many small chunks: the threads interleave
    try:
        with socket_pairs(300) as pairs:
            short = fanout.write([ours.fileno() for ours, _ in pairs], b"\x81\x05hello")
            received = [drain(theirs) for _, theirs in pairs]
    finally:
        fanout.close()
    assert short == []
    assert received == [b"\x81\x05hello"] * 300


def test_a_socket_whose_buffer_is_full_is_reported_with_the_bytes_it_took() -> None:
    frame = b"x" * 600_000  # more than a socket pair's buffers hold
    with socket_pairs(3) as pairs:
        short = FanOut(helpers=0).write([ours.fileno() for ours, _ in pairs], frame)
        taken = [len(drain(theirs)) for _, theirs in pairs]
    assert sorted(index for index, _ in short) == [0, 1, 2]
    assert all(0 < written < len(frame) for _, written in short)
    assert [written for _, written in sorted(short)] == taken  # exactly what the peer could read


def test_a_socket_that_cannot_take_a_byte_is_reported_with_nothing_written() -> None:
    with socket_pairs(2) as pairs:
        full, _ = pairs[0]
        with contextlib.suppress(BlockingIOError):
            while True:
                full.send(b"y" * 65536)
        short = FanOut(helpers=0).write([ours.fileno() for ours, _ in pairs], b"frame")
        assert drain(pairs[1][1]) == b"frame"
    assert short == [(0, 0)]


def test_a_socket_whose_peer_is_gone_is_reported_and_the_others_still_receive() -> None:
    with socket_pairs(3) as pairs:
        pairs[1][1].close()  # EPIPE on write (CPython ignores SIGPIPE)
        short = FanOut(helpers=0).write([ours.fileno() for ours, _ in pairs], b"frame")
        assert drain(pairs[0][1]) == drain(pairs[2][1]) == b"frame"
    assert short == [(1, 0)]


def test_below_the_split_threshold_only_the_calling_thread_writes() -> None:
    writers: set[str] = set()
    real = write_chunks

    def recording(*args: object) -> object:
        writers.add(threading.current_thread().name)
        return real(*args)  # type: ignore[arg-type]

    fanout = FanOut(helpers=1, split_at=100)
    try:
        with socket_pairs(10) as pairs, pytest.MonkeyPatch.context() as patch:
            patch.setattr("ccsm_gateway.fanout.write_chunks", recording)
            fanout.write([ours.fileno() for ours, _ in pairs], b"frame")
    finally:
        fanout.close()
    assert writers == {threading.current_thread().name}


def test_without_a_second_core_there_is_no_helper(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("ccsm_gateway.fanout.usable_cores", lambda: 1)
    assert FanOut().helpers == 0
    monkeypatch.setattr("ccsm_gateway.fanout.usable_cores", lambda: 4)
    fanout = FanOut()
    fanout.close()
    assert fanout.helpers == 1


def cgroup(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({"cpu.max": "50000 100000\n"}, 1),  # cgroup v2, half a CPU (an ECS task of 512 units)
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs of time can keep two threads busy
        ({"cpu.max": "max 100000\n"}, 4),  # no quota: the affinity decides
        ({"cpu/cpu.cfs_quota_us": "25000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({}, 4),  # no cgroup files at all
        ({"cpu.max": "garbage"}, 4),
    ],
)
def test_the_usable_cores_are_the_affinity_capped_by_the_cgroup_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, files: dict[str, str], cores: int
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert usable_cores(cgroup(tmp_path, files)) == cores
