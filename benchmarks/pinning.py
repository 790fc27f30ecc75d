"""Pinning the CPU measurements' processes to one CPU, and undoing it.

The CPU figures come from this process and the servers it talks to (the
stand-in MongoDB server, redis-server). Left to the scheduler, on a machine
with few cores, they migrate between CPUs and share them with other work,
and the same measurement varies by tens of per cent; on one CPU, together,
they vary by a few. :class:`Pinned` moves every thread of each process to
one CPU (``sched_setaffinity`` on each thread id: a process's threads each
have their own affinity, and threads made later inherit their creator's)
and puts back the affinities it found when it is undone.
"""
import os
import shutil

#: The CPU that the CPU measurements run on.
CPU = 0


def _threads(pid):
    """The thread ids of process ``pid`` (``pid`` alone where /proc is not there)."""
    try:
        return [int(tid) for tid in os.listdir('/proc/%d/task' % pid)]
    except (OSError, ValueError):
        return [pid]


def unavailable():
    """Why pinning cannot be done here, or None."""
    if not hasattr(os, 'sched_setaffinity'):
        return 'this platform has no sched_setaffinity'
    try:
        allowed = os.sched_getaffinity(0)
    except OSError as exc:
        return 'the CPU affinity cannot be read (%s)' % exc
    if CPU not in allowed:
        return 'CPU %d is not available to this process' % CPU
    return None


class Pinned:
    """Pins processes (every thread of each) to :data:`CPU`; :meth:`undo` restores them."""

    def __init__(self):
        self.saved = {}      # thread id: its affinity before
        self.processes = []  # (name, pid)
        self.failures = []   # (name, reason)

    def pin(self, name, pid):
        """Pin every thread of process ``pid`` (``name`` says what it is in the output)."""
        pinned = 0
        for tid in _threads(pid):
            try:
                before = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {CPU})
            except OSError as exc:   # a thread that ended meanwhile, or no permission
                if not pinned and tid == pid:
                    self.failures.append((name, str(exc)))
                continue
            self.saved.setdefault(tid, before)
            pinned += 1
        if pinned:
            self.processes.append((name, pid))
        return bool(pinned)

    def undo(self):
        for tid, before in self.saved.items():
            try:
                os.sched_setaffinity(tid, before)
            except OSError:
                pass   # the thread has ended
        # Threads made while pinned inherited the pin: this process's get the
        # affinity its main thread had.
        own = self.saved.get(os.getpid())
        if own is not None:
            for tid in _threads(os.getpid()):
                if tid not in self.saved:
                    try:
                        os.sched_setaffinity(tid, own)
                    except OSError:
                        pass
        self.saved = {}

    def summary(self):
        """One sentence for the output."""
        if not self.processes:
            return 'not pinned to one CPU: %s' % ('; '.join(
                '%s: %s' % failure for failure in self.failures) or 'nothing to pin')
        text = 'pinned to CPU %d, all on the same CPU: %s' % (
            CPU, ', '.join(name for name, _ in self.processes))
        if self.failures:
            text += '; not pinned: %s' % '; '.join('%s (%s)' % failure
                                                   for failure in self.failures)
        tool = shutil.which('taskset')
        return text + (' (sched_setaffinity on every thread, as taskset -a does%s)'
                       % ('' if tool else '; taskset itself is not installed'))
