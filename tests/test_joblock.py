"""The per-job lock (protocols.joblock): one holder across processes, stale locks recognised and taken over."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocols.joblock import LOCK, JobLock, holder_info, lock_state, read_lock, stale_reason

ROOT = Path(__file__).resolve().parent.parent


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(job: Path, **over) -> dict:
    job.mkdir(parents=True, exist_ok=True)
    info = {**holder_info(), **over}
    (job / LOCK).write_text(json.dumps(info))
    return info


def test_acquire_holds_until_release(tmp_path):
    a, b = JobLock(tmp_path / "job"), JobLock(tmp_path / "job")
    assert a.acquire()
    assert not b.acquire() and b.holder["token"] == a.info["token"] and b.holder["pid"] == os.getpid()
    assert lock_state(tmp_path / "job")["token"] == a.info["token"]
    a.release()
    assert not (tmp_path / "job" / LOCK).exists() and lock_state(tmp_path / "job") is None
    assert b.acquire() and b.taken_over is None
    b.release()
    assert [p.name for p in (tmp_path / "job").iterdir()] == []       # no temporary files left behind


def test_lock_of_a_dead_pid_is_taken_over(tmp_path):
    job = tmp_path / "job"
    pid = _dead_pid()
    _write_lock(job, pid=pid, pid_start="1")
    assert lock_state(job) is None
    lk = JobLock(job)
    assert lk.acquire()
    assert f"pid {pid} on this host is gone" in lk.taken_over
    assert read_lock(job / LOCK)[0]["token"] == lk.info["token"]
    lk.release()


def test_killed_but_unreaped_holder_is_gone(tmp_path):
    """kill -9 of a holder whose parent has not reaped it yet: a zombie still answers kill(pid, 0)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {**holder_info(), "pid": p.pid, "pid_start": None}
        assert stale_reason(info, time.time()) is None
        p.kill()
        deadline = time.time() + 10
        while time.time() < deadline and stale_reason(info, time.time()) is None:
            time.sleep(0.02)
        assert os.path.exists(f"/proc/{p.pid}")                 # not reaped yet: a zombie
        assert stale_reason(info, time.time()) == f"pid {p.pid} on this host is gone"
    finally:
        p.kill()
        p.wait()


def test_reused_pid_is_recognised(tmp_path):
    info = {**holder_info(), "pid_start": "-1"}        # our own pid, but a process that started at another time
    assert "another process" in stale_reason(info, time.time())
    info = holder_info()
    assert stale_reason(info, time.time()) is None     # this very process: alive


def test_other_host_is_judged_by_its_heartbeat(tmp_path):
    job = tmp_path / "job"
    _write_lock(job, host="node-elsewhere-" + socket.gethostname(), pid=1)
    assert not JobLock(job, stale_after_s=60).acquire()          # fresh heartbeat: held
    old = time.time() - 120
    os.utime(job / LOCK, (old, old))
    lk = JobLock(job, stale_after_s=60)
    assert lk.acquire() and "no heartbeat from node-elsewhere" in lk.taken_over
    lk.release()


def test_another_boot_of_this_host_is_not_trusted_by_pid(tmp_path):
    info = {**holder_info(), "boot_id": "an-earlier-boot"}
    assert stale_reason(info, time.time(), stale_after_s=60) is None       # recent: wait for the heartbeat
    assert stale_reason(info, time.time() - 61, stale_after_s=60).startswith("no heartbeat")


def test_unreadable_lock_waits_for_its_age(tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    (job / LOCK).write_bytes(b"\x00garbage")
    assert not JobLock(job, stale_after_s=60).acquire()
    old = time.time() - 61
    os.utime(job / LOCK, (old, old))
    lk = JobLock(job, stale_after_s=60)
    assert lk.acquire() and "unreadable" in lk.taken_over
    lk.release()


def test_heartbeat_touches_the_lock(tmp_path):
    lk = JobLock(tmp_path / "job", heartbeat_s=0.05)
    assert lk.acquire()
    old = time.time() - 1000
    os.utime(lk.path, (old, old))
    deadline = time.time() + 10
    while time.time() < deadline and lk.path.stat().st_mtime < old + 500:
        time.sleep(0.02)
    assert lk.path.stat().st_mtime > old + 500
    lk.release()


def test_release_leaves_someone_elses_lock_alone(tmp_path):
    lk = JobLock(tmp_path / "job")
    assert lk.acquire()
    other = _write_lock(tmp_path / "job")             # e.g. taken over after we were judged stale
    lk.release()
    assert read_lock(tmp_path / "job" / LOCK)[0]["token"] == other["token"]


RACE = """
import sys, time
from protocols.joblock import JobLock
lk = JobLock(sys.argv[1])
while time.time() < float(sys.argv[2]):
    pass
ok = lk.acquire()
print("HELD" if ok else "BUSY", flush=True)
time.sleep(1.5)
lk.release()
"""


@pytest.mark.parametrize("stale", [False, True])
def test_processes_racing_for_one_job_get_one_holder(tmp_path, stale):
    """Four processes start acquire() at the same instant, on a free job or on one with a stale lock: one wins."""
    job = tmp_path / "job"
    if stale:
        _write_lock(job, pid=_dead_pid(), pid_start="1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(job), str(start)], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(4)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert sorted(outs) == ["BUSY", "BUSY", "BUSY", "HELD"], outs
    assert not (job / LOCK).exists()
