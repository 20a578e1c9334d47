#!/usr/bin/env python3
"""Sample CPU time (utime+stime) and resident memory of daemon processes from /proc.

usage:
  procstat.py snap PIDFILE...            one JSON sample on stdout
  procstat.py watch OUT PIDFILE...       sample every 0.25 s until SIGTERM/SIGINT,
                                         then write all samples to OUT (JSON)
Each PIDFILE holds one pid; the daemon's name is the file name without ".pid".
A process that has gone away is recorded as absent, not an error: the caller
decides (the benchmark checks the daemons separately).
"""
import json
import os
import signal
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def read_pids(files):
    out = {}
    for f in files:
        name = os.path.basename(f)
        if name.endswith(".pid"):
            name = name[:-4]
        try:
            with open(f) as fh:
                out[name] = int(fh.read().strip())
        except (OSError, ValueError):
            continue
    return out


def sample(pids):
    s = {"t": time.monotonic(), "procs": {}}
    # Whole-machine busy CPU seconds (all cores): shows how much else ran.
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
        s["machine_busy_s"] = (sum(f[:8]) - f[3] - f[4]) / TICK
    except (OSError, ValueError, IndexError):
        pass
    for name, pid in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{pid}/statm") as fh:
                rss_pages = int(fh.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        # Fields after the parenthesised command name; utime/stime are 14th/15th.
        rest = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(rest[11]) + int(rest[12])) / TICK
        s["procs"][name] = {"pid": pid, "cpu_s": cpu, "rss_bytes": rss_pages * PAGE}
        # Context switches of all its threads: each voluntary one is a
        # thread that slept and was woken (a hand-off), which on this VM
        # costs more than most of the work of a small I/O.
        vcs = ivcs = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{tid}/status") as fh:
                        for line in fh:
                            if line.startswith("voluntary_ctxt_switches:"):
                                vcs += int(line.split()[1])
                            elif line.startswith("nonvoluntary_ctxt_switches:"):
                                ivcs += int(line.split()[1])
                except (OSError, ValueError, IndexError):
                    continue  # a thread that ended meanwhile
            s["procs"][name]["vcs"] = vcs
            s["procs"][name]["ivcs"] = ivcs
        except OSError:
            pass
        # Anonymous vs file-backed resident memory: mapped files (a store's
        # mmap, the binary) count in RSS but are reclaimable page cache.
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith(("RssAnon:", "RssFile:")):
                        key = "rss_anon_bytes" if line.startswith("RssAnon") else "rss_file_bytes"
                        s["procs"][name][key] = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return s


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "snap":
        print(json.dumps(sample(read_pids(sys.argv[2:]))))
        return 0
    if len(sys.argv) >= 4 and sys.argv[1] == "watch":
        out = sys.argv[2]
        pids = read_pids(sys.argv[3:])
        samples = []
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        while not stop:
            samples.append(sample(pids))
            time.sleep(0.25)
        samples.append(sample(pids))
        with open(out, "w") as fh:
            json.dump(samples, fh)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
