"""A lock per fold job (RUN/jobs/<model>/fold<k>/LOCK): one holder across processes, hosts and Slurm tasks.

The lock file is created atomically (a fully written temporary file hard-linked to LOCK, which fails if LOCK
exists; O_EXCL where the file system has no hard links) and names its holder: host, boot id, pid and the pid's
start time, a random token. While the job runs, a daemon thread touches LOCK every `heartbeat_s` seconds.
A lock is stale, and is taken over, when its holder is gone:
  * same host (hostname and boot id): the pid no longer exists, or it is another process that got the same pid
    (different start time);
  * another host, another boot of this host, or an unreadable lock file: no heartbeat for `stale_after_s`.
Take-over moves the stale LOCK aside with one atomic rename and checks that what it moved is the lock it judged
stale (two processes taking over at once: one wins, the other sees a live lock). Torch-free.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

LOCK = "LOCK"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0      # a lock of another host is stale after this long without a heartbeat (10 missed beats)

log = logging.getLogger("fibrobench.run")


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None where unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]      # fields after "comm)": state is field 3, starttime field 22


def _pid_alive(pid: int) -> bool:
    """The pid exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:         # exists, owned by someone else
        pass
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return True


def holder_info() -> dict:
    """Who this process is, as a lock file records it."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "pid_start": _pid_start(pid),
            "token": uuid.uuid4().hex, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "acquired_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def describe(info: dict | None) -> str:
    if not info:
        return "an unreadable lock"
    job = f", Slurm job {info['slurm_job_id']}" if info.get("slurm_job_id") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{job} since {info.get('acquired_utc')}"


def read_lock(path) -> tuple[dict | None, float] | None:
    """(holder info or None when unreadable, mtime) of a lock file; None when there is no lock."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):       # e.g. no permission: count it as fresh (held), never as stale
        return None, time.time()
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        info = None
    return (info if isinstance(info, dict) else None), mtime


def stale_reason(info: dict | None, mtime: float, now: float | None = None,
                 stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the lock's holder is gone (the lock may be taken over), or None while it may still be running."""
    now = time.time() if now is None else now
    age = now - mtime
    if info is None:
        return f"unreadable lock file, untouched for {age:.0f} s" if age > stale_after_s else None
    same_host = info.get("host") == socket.gethostname() and info.get("boot_id") == _boot_id()
    pid = info.get("pid")
    if same_host and isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
        if not _pid_alive(pid):
            return f"pid {pid} on this host is gone"
        started = _pid_start(pid)
        if info.get("pid_start") is not None and started is not None and started != info.get("pid_start"):
            return f"pid {pid} on this host is another process now"
        return None
    if age > stale_after_s:
        return f"no heartbeat from {info.get('host')} for {age:.0f} s"
    return None


class JobLock:
    """acquire() -> True (this process holds the job; heartbeat running) or False (`self.holder` has it)."""

    def __init__(self, job_dir, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S):
        self.dir = Path(job_dir)
        self.path = self.dir / LOCK
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.info: dict | None = None
        self.holder: dict | None = None
        self.taken_over: str | None = None      # why the previous holder's lock was judged stale
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ------------------------------------------------------------ acquire / release

    def _create(self, info: dict) -> bool:
        """Create LOCK holding `info` unless it exists (atomic)."""
        data = (json.dumps(info, sort_keys=True) + "\n").encode("utf-8")
        tmp = self.dir / f".{LOCK}.{info['token']}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:             # no hard links here (some FUSE / SMB mounts): O_EXCL
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, judged: dict | None, reason: str) -> None:
        """Move the stale lock aside; put it back if what moved is not the lock judged stale."""
        aside = self.dir / f".{LOCK}.stale.{uuid.uuid4().hex}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return                                  # someone else moved or released it
        moved = read_lock(aside)
        moved_token = moved[0].get("token") if moved and moved[0] else None
        judged_token = judged.get("token") if judged else None
        if moved_token != judged_token:            # replaced in between by a fresh holder: give it back
            try:
                os.link(aside, self.path)
            except OSError:
                pass
        else:
            self.taken_over = f"{describe(judged)} ({reason})"
            log.warning("%s: taking over a stale lock of %s", self.dir, self.taken_over)
        aside.unlink(missing_ok=True)

    def acquire(self) -> bool:
        self.dir.mkdir(parents=True, exist_ok=True)
        for _ in range(8):
            info = holder_info()
            if self._create(info):
                self.info, self.holder = info, None
                self._start_heartbeat()
                return True
            seen = read_lock(self.path)
            if seen is None:
                continue                            # released in between: try again
            held, mtime = seen
            reason = stale_reason(held, mtime, stale_after_s=self.stale_after_s)
            if reason is None:
                self.holder = held or {}
                return False
            self._take_over(held, reason)
        seen = read_lock(self.path)
        self.holder = (seen[0] or {}) if seen else {}
        return False

    def owned(self) -> bool:
        seen = read_lock(self.path)
        return bool(self.info and seen and seen[0] and seen[0].get("token") == self.info["token"])

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self.owned():
            self.path.unlink(missing_ok=True)
        self.info = None

    # ------------------------------------------------------------ heartbeat

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"lock-heartbeat {self.dir}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.owned():
                log.error("%s: lost the job lock (now %s)", self.dir, describe((read_lock(self.path) or ({},))[0]))
                return
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def lock_state(job_dir, stale_after_s: float = STALE_AFTER_S) -> dict | None:
    """The live holder of a job's lock, or None when the job is free (no lock, or a stale one)."""
    seen = read_lock(Path(job_dir) / LOCK)
    if seen is None:
        return None
    info, mtime = seen
    return None if stale_reason(info, mtime, stale_after_s=stale_after_s) else (info or {})
