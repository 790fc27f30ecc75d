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
import time

#: The CPU that the CPU measurements run on when the machine cannot tell
#: which is the least busy (see :func:`least_busy_cpu`).
CPU = 0


def _threads(pid):
    """The thread ids of process ``pid`` (``pid`` alone where /proc is not there)."""
    try:
        return [int(tid) for tid in os.listdir('/proc/%d/task' % pid)]
    except (OSError, ValueError):
        return [pid]


def _busy_times():
    """``{cpu: busy seconds}`` from /proc/stat, or None where it cannot be read."""
    try:
        with open('/proc/stat') as f:
            lines = [line.split() for line in f if line.startswith('cpu')
                     and line[3:4].isdigit()]
    except OSError:
        return None
    ticks = os.sysconf('SC_CLK_TCK')
    busy = {}
    for fields in lines:
        values = [int(v) for v in fields[1:]]
        # user nice system, irq softirq steal (idle and iowait left out)
        busy[int(fields[0][3:])] = (sum(values[:3]) + sum(values[5:8])) / ticks
    return busy


def least_busy_cpu(sample=0.3):
    """The CPU of this process's allowed ones that other work used least over
    ``sample`` seconds (the lowest-numbered on a tie), and how busy it was (0..1).

    Returns ``(CPU, None)`` where the machine cannot tell.
    """
    allowed = sorted(os.sched_getaffinity(0))
    before = _busy_times()
    time.sleep(sample)
    after = _busy_times()
    if not before or not after:
        return (CPU if CPU in allowed else allowed[0]), None
    load = {cpu: (after[cpu] - before[cpu]) / sample for cpu in allowed
            if cpu in before and cpu in after}
    if not load:
        return (CPU if CPU in allowed else allowed[0]), None
    cpu = min(load, key=lambda c: (round(load[c], 1), c))
    return cpu, load[cpu]


def unavailable():
    """Why pinning cannot be done here, or None."""
    if not hasattr(os, 'sched_setaffinity'):
        return 'this platform has no sched_setaffinity'
    try:
        allowed = os.sched_getaffinity(0)
    except OSError as exc:
        return 'the CPU affinity cannot be read (%s)' % exc
    if not allowed:
        return 'no CPU is available to this process'
    return None


class Pinned:
    """Pins processes (every thread of each) to one CPU; :meth:`undo` restores them.

    ``cpu``: that CPU (:data:`CPU` by default); ``why``: how it was chosen, for
    the output.
    """

    def __init__(self, cpu=CPU, why=None):
        self.cpu = cpu
        self.why = why
        self.saved = {}      # thread id: its affinity before
        self.processes = []  # (name, pid)
        self.failures = []   # (name, reason)

    def pin(self, name, pid):
        """Pin every thread of process ``pid`` (``name`` says what it is in the output)."""
        pinned = 0
        for tid in _threads(pid):
            try:
                before = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {self.cpu})
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
        text = 'pinned to CPU %d%s, all on the same CPU: %s' % (
            self.cpu, ' (%s)' % self.why if self.why else '',
            ', '.join(name for name, _ in self.processes))
        if self.failures:
            text += '; not pinned: %s' % '; '.join('%s (%s)' % failure
                                                   for failure in self.failures)
        tool = shutil.which('taskset')
        return text + (' (sched_setaffinity on every thread, as taskset -a does%s)'
                       % ('' if tool else '; taskset itself is not installed'))
