# faultarm.py — the integration tests' handle on a daemon's allocation failures armed by
# count (not a test itself).  The daemon runs with MENDFS_TEST_FAULTS and
# MENDFS_TEST_FAULTS_ARM=FILE (fs/testfaults.c): arm(S) writes S into FILE and sends
# SIGUSR1, after which S allocations succeed and every later one fails; disarm() sends
# SIGUSR2.  Each waits (bounded) for the line the daemon's handler writes into its log,
# so that the operation that follows meets the new state.
#
#   sys.path.insert(0, TESTDIR); import faultarm
#   f = faultarm.Faults(pid, logpath, armpath)
#   f.arm(skip); ...; injected, text = f.disarm()
#
# disarm() returns the failures injected so far and the log written since the last wait
# (the daemon's messages about what failed).  content(path) reads a file's bytes as the
# daemon has them (its cached pages dropped first).
import os
import re
import signal
import sys
import time


class Faults:
    def __init__(self, pid, logpath, armpath):
        self.pid, self.armpath = pid, armpath
        self.log = open(logpath, "rb")
        self.log.seek(0, os.SEEK_END)

    def wait_line(self, word):
        buf = b""
        for _ in range(4000):
            buf += self.log.read()
            if word in buf:
                return buf
            time.sleep(0.0025)
        sys.exit("no '%s' line from the daemon" % word.decode())

    def arm(self, skip):
        with open(self.armpath, "w") as f:
            f.write("%d\n" % skip)
        os.kill(self.pid, signal.SIGUSR1)
        self.wait_line(b"test faults armed")

    def disarm(self):
        os.kill(self.pid, signal.SIGUSR2)
        text = self.wait_line(b" injected\n")
        return int(re.findall(rb"test faults: (\d+) injected", text)[-1]), text


def content(path):
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return f.read()
