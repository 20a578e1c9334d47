#!/usr/bin/env python3
"""Turn bench/run.sh's raw measurements (OUT/raw) into OUT/results.md,
OUT/results.json and OUT/latency.png (the plot only if matplotlib is present).

usage: report.py OUT
"""
import glob
import json
import os
import re
import sys

RBD_JOBS = [
    "randwrite-4k-qd1",
    "randread-4k-qd1",
    "randwrite-4k-qd32",
    "randread-4k-qd32",
    "seqwrite-4m-qd4",
    "seqread-4m-qd4",
    "randrw-64k-qd16",
    "randwrite-4k-qd32-after-snap",
]
DURABLE_JOBS = [
    "randwrite-4k-qd1-fdatasync",
    "randwrite-4k-qd1-fsync",
    "randwrite-4k-qd32-fdatasync",
    "seqwrite-4m-qd4-fdatasync",
]
# The durable variant that bounds each rbd write job from below.
DURABLE_OF = {
    "randwrite-4k-qd1": "randwrite-4k-qd1-fdatasync",
    "randwrite-4k-qd32": "randwrite-4k-qd32-fdatasync",
    "randwrite-4k-qd32-after-snap": "randwrite-4k-qd32-fdatasync",
    "seqwrite-4m-qd4": "seqwrite-4m-qd4-fdatasync",
}
MIB = 1 << 20


def load(path, default=None):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return default


def fio_metrics(path):
    """IOPS, MiB/s, mean latency (lat_ns), p99 completion latency, client CPU per I/O."""
    d = load(path)
    j = d["jobs"][0]
    sides = [j[s] for s in ("read", "write") if j[s]["total_ios"] > 0]
    ios = sum(s["total_ios"] for s in sides)
    iops = sum(s["iops"] for s in sides)
    bw = sum(s["bw_bytes"] for s in sides)
    mean_ns = sum(s["lat_ns"]["mean"] * s["total_ios"] for s in sides) / ios
    p99 = max(s["clat_ns"].get("percentile", {}).get("99.000000", 0) for s in sides)
    runtime_s = max(s["runtime"] for s in sides) / 1000.0
    cpu_frac = (j.get("usr_cpu", 0) + j.get("sys_cpu", 0)) / 100.0
    return {
        "iops": iops,
        "mib_s": bw / MIB,
        "mean_lat_us": mean_ns / 1000.0,
        "p99_clat_us": p99 / 1000.0,
        # fio's fdatasync/fsync after each write (fdatasync=1 jobs), timed apart from the write.
        "sync_lat_us": (j.get("sync", {}).get("lat_ns", {}).get("mean") or 0) / 1000.0 or None,
        "ios": ios,
        "runtime_s": runtime_s,
        "client_cpu_us_per_io": cpu_frac * runtime_s * 1e6 / ios if ios else None,
    }


def proc_metrics(path, runtime_s, iops):
    """Daemon CPU per I/O over the measured window, peak RSS, machine busy cores."""
    samples = load(path)
    if not samples or len(samples) < 2:
        return {}
    t_end = samples[-1]["t"]
    # fio's measured window ends when it stops issuing I/O, just before the
    # last samples (which also cover its close/disconnect): take the window
    # [end - runtime, end - 0.5 s] and rates over it.
    win = [s for s in samples if t_end - runtime_s - 0.25 <= s["t"] <= t_end - 0.5]
    if len(win) < 2:
        win = samples
    a, b = win[0], win[-1]
    dt = b["t"] - a["t"]
    common = set(a["procs"]) & set(b["procs"])
    cpu = sum(b["procs"][n]["cpu_s"] - a["procs"][n]["cpu_s"] for n in common)
    # Threads that exited within the window take their switches with
    # them: counts are a lower bound (the daemons' threads are long-lived).
    cs = {}
    for key in ("vcs", "ivcs"):
        if all(key in a["procs"][n] and key in b["procs"][n] for n in common) and common:
            cs[key] = sum(b["procs"][n][key] - a["procs"][n][key] for n in common)
    out = {
        "daemon_vcs_per_io": (cs["vcs"] / dt) / iops if "vcs" in cs and dt > 0 and iops else None,
        "daemon_ivcs_per_io": (cs["ivcs"] / dt) / iops if "ivcs" in cs and dt > 0 and iops else None,
        "daemon_cores": cpu / dt if dt > 0 else None,
        "daemon_cpu_us_per_io": (cpu / dt) * 1e6 / iops if dt > 0 and iops else None,
        "machine_busy_cores": (b.get("machine_busy_s", 0) - a.get("machine_busy_s", 0)) / dt if dt > 0 else None,
        "peak_rss": {},
        "peak_anon": {},
    }
    for s in samples:
        for n, p in s["procs"].items():
            out["peak_rss"][n] = max(out["peak_rss"].get(n, 0), p["rss_bytes"])
            if "rss_anon_bytes" in p:
                out["peak_anon"][n] = max(out["peak_anon"].get(n, 0), p["rss_anon_bytes"])
    return out


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def switches(r, who):
    """Voluntary + involuntary context switches per I/O, or n/a."""
    v, i = r.get(f"{who}_vcs_per_io"), r.get(f"{who}_ivcs_per_io")
    if v is None or i is None:
        return "n/a"
    return f"{v:.2f} + {i:.2f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def main():
    out = sys.argv[1]
    raw = os.path.join(out, "raw")
    machine = load(os.path.join(raw, "machine.json"), {})
    end = load(os.path.join(raw, "end.json"), {})
    systems = [s for s in ("ceph", "quarry") if os.path.exists(os.path.join(raw, f"{s}-bringup.json"))]

    runs = {}  # (system, job) -> [per-pass metrics]
    for path in sorted(glob.glob(os.path.join(raw, "*-p[0-9]*.json"))):
        if path.endswith(".proc.json"):
            continue
        m = re.match(r"(ceph|quarry|file)-(.+)-p(\d+)\.json$", os.path.basename(path))
        if not m or m.group(2) == "prefill":
            continue
        sysname, job, p = m.group(1), m.group(2), int(m.group(3))
        fm = fio_metrics(path)
        fm["pass"] = p
        pm = proc_metrics(path[: -len(".json")] + ".proc.json", fm["runtime_s"], fm["iops"])
        fm.update({k: v for k, v in pm.items() if k not in ("peak_rss", "peak_anon")})
        # fio's usr/sys_cpu cover its job thread only (RUSAGE_THREAD), not
        # librbd's own threads: the whole process, sampled from /proc, when run.sh
        # recorded it.
        cm = proc_metrics(path[: -len(".json")] + ".client.proc.json", fm["runtime_s"], fm["iops"])
        fm["fio_thread_cpu_us_per_io"] = fm["client_cpu_us_per_io"]
        if cm.get("daemon_cpu_us_per_io") is not None:
            fm["client_cpu_us_per_io"] = cm["daemon_cpu_us_per_io"]
        fm["client_vcs_per_io"] = cm.get("daemon_vcs_per_io")
        fm["client_ivcs_per_io"] = cm.get("daemon_ivcs_per_io")
        fm["_peak_rss"] = pm.get("peak_rss", {})
        fm["_peak_anon"] = pm.get("peak_anon", {})
        runs.setdefault((sysname, job), []).append(fm)
    for v in runs.values():
        v.sort(key=lambda r: r["pass"])

    def agg(sysname, job, key):
        return mean([r.get(key) for r in runs.get((sysname, job), [])])

    def each(sysname, job, key, nd=1):
        rs = runs.get((sysname, job), [])
        return " / ".join(fmt(r.get(key), nd) for r in rs) if rs else "n/a"

    # Memory.
    mem = {}
    for s in systems:
        rest = load(os.path.join(raw, f"{s}-rss-rest.json"), {}).get("procs", {})
        after = load(os.path.join(raw, f"{s}-rss-after.json"), {}).get("procs", {})
        peak, peak_anon = {}, {}
        for (sysname, _), rs in runs.items():
            if sysname != s:
                continue
            for r in rs:
                for n, v in r["_peak_rss"].items():
                    peak[n] = max(peak.get(n, 0), v)
                for n, v in r["_peak_anon"].items():
                    peak_anon[n] = max(peak_anon.get(n, 0), v)
        mem[s] = {
            n: {
                "rest_mib": rest.get(n, {}).get("rss_bytes", 0) / MIB,
                "peak_load_mib": peak.get(n, 0) / MIB,
                "peak_load_anon_mib": peak_anon[n] / MIB if n in peak_anon else None,
                "after_load_mib": after.get(n, {}).get("rss_bytes", 0) / MIB if n in after else None,
            }
            for n in sorted(set(rest) | set(peak))
        }
    for rs in runs.values():
        for r in rs:
            r.pop("_peak_rss", None)
            r.pop("_peak_anon", None)

    bringup = {s: load(os.path.join(raw, f"{s}-bringup.json"), {}).get("bringup_ms") for s in systems}
    cplane = {s: load(os.path.join(raw, f"{s}-cplane.json"), {}) for s in systems}
    cli = {s: load(os.path.join(raw, f"{s}-cli.json"), {}) for s in systems}
    libpath = {}
    for s in systems:
        try:
            libpath[s] = open(os.path.join(raw, f"{s}-librbd-path")).read().strip()
        except OSError:
            libpath[s] = "?"
    # Per-run library checks (run.sh writes X.lib for each rbd run it verified).
    lib_checked = {}
    for s in systems:
        tot = [f for f in glob.glob(os.path.join(raw, f"{s}-*-p[0-9]*.json")) if not f.endswith(".proc.json")]
        ok = [f for f in tot if os.path.exists(f[: -len(".json")] + ".lib")]
        lib_checked[s] = {"runs": len(tot), "verified": len(ok)}
    ping = {n: load(os.path.join(raw, f"pingpong-{n}.json"), {}) for n in (64, 4096)}
    ping_unix = {n: load(os.path.join(raw, f"pingpong-unix-{n}.json"), {}) for n in (64, 4096)}

    have_ceph = "ceph" in systems

    # Targets (DESIGN.md §5), each beside its measurement.
    targets = []

    def target(name, measured, unit, goal_text, ok, factor):
        if measured is None or ok is None:
            status = "n/a (Ceph not run)" if not have_ceph else "n/a (not measured)"
        elif ok:
            status = "met"
        else:
            status = f"missed by {factor:.2f}x"
        targets.append({"target": name, "goal": goal_text, "measured": measured, "unit": unit, "status": status})

    def at_most(name, measured, limit, unit, goal_text):
        ok = None if measured is None or limit is None else measured <= limit
        target(name, measured, unit, goal_text, ok, (measured / limit) if ok is False else None)

    def at_least(name, measured, need, unit, goal_text):
        ok = None if measured is None or need is None else measured >= need
        target(name, measured, unit, goal_text, ok, (need / measured) if ok is False and measured else None)

    # One durable write at QD1 is a write followed by its fdatasync, back to back: its time is 1/IOPS of the
    # fdatasync job. (fio's lat_ns covers the write alone, not the fdatasync fio issues after it, so its mean
    # understates the floor by the flush; the table below shows both parts.)
    floor_iops = agg("file", "randwrite-4k-qd1-fdatasync", "iops")
    floor = 1e6 / floor_iops if floor_iops else None
    q = lambda job, key: agg("quarry", job, key)  # noqa: E731
    c = lambda job, key: agg("ceph", job, key) if have_ceph else None  # noqa: E731
    at_most(
        "4 KiB randwrite QD1 mean latency",
        q("randwrite-4k-qd1", "mean_lat_us"),
        floor * 1.25 if floor else None,
        "µs",
        f"≤ 1.25 × durable floor ({fmt(floor)} µs: direct 4 KiB write + its fdatasync, 1/IOPS at QD1) = "
        f"{fmt(floor * 1.25 if floor else None)} µs",
    )
    # Issue 3 states its QD1 target against a limit with the network in it: one durable write on a file plus one
    # loopback round trip (the client's to the primary).
    rtt1 = (ping.get(64) or {}).get("mean_us")
    net_floor = float(rtt1) + floor if rtt1 and floor else None
    at_most(
        "4 KiB randwrite QD1 mean latency (issue 3)",
        q("randwrite-4k-qd1", "mean_lat_us"),
        net_floor * 1.25 if net_floor else None,
        "µs",
        f"≤ 1.25 × (durable floor + loopback round trip = {fmt(net_floor)} µs) = "
        f"{fmt(net_floor * 1.25 if net_floor else None)} µs",
    )
    cr = c("randread-4k-qd1", "mean_lat_us")
    at_most(
        "4 KiB randread QD1 mean latency",
        q("randread-4k-qd1", "mean_lat_us"),
        cr / 5 if cr else None,
        "µs",
        f"≤ 1/5 of Ceph ({fmt(cr)} µs) = {fmt(cr / 5 if cr else None)} µs",
    )
    cw = c("randwrite-4k-qd32", "iops")
    at_least("4 KiB randwrite QD32 IOPS", q("randwrite-4k-qd32", "iops"), cw * 8 if cw else None, "IOPS",
             f"≥ 8 × Ceph ({fmt(cw)}) = {fmt(cw * 8 if cw else None)}")
    crr = c("randread-4k-qd32", "iops")
    at_least("4 KiB randread QD32 IOPS", q("randread-4k-qd32", "iops"), crr * 5 if crr else None, "IOPS",
             f"≥ 5 × Ceph ({fmt(crr)}) = {fmt(crr * 5 if crr else None)}")
    ccpu = c("randwrite-4k-qd32", "daemon_cpu_us_per_io")
    at_most("daemon CPU per replicated 4 KiB write (QD32)", q("randwrite-4k-qd32", "daemon_cpu_us_per_io"),
            ccpu / 10 if ccpu else None, "µs", f"≤ 1/10 of Ceph ({fmt(ccpu)} µs) = {fmt(ccpu / 10 if ccpu else None)} µs")
    at_most("daemon CPU per replicated 4 KiB write (QD32, issue 3)", q("randwrite-4k-qd32", "daemon_cpu_us_per_io"),
            70.0, "µs", "< 70 µs")
    csw = c("seqwrite-4m-qd4", "mib_s")
    at_least("4 MiB sequential write", q("seqwrite-4m-qd4", "mib_s"), csw * 2 if csw else None, "MiB/s",
             f"≥ 2 × Ceph ({fmt(csw)}) = {fmt(csw * 2 if csw else None)} MiB/s")
    csr = c("seqread-4m-qd4", "mib_s")
    at_least("4 MiB sequential read", q("seqread-4m-qd4", "mib_s"), csr, "MiB/s", f"≥ Ceph ({fmt(csr)} MiB/s)")
    qosd = {n: v for n, v in mem.get("quarry", {}).items() if n.startswith("osd")}
    idle = max((v["rest_mib"] for v in qosd.values()), default=None)
    loaded = max((v["peak_load_mib"] for v in qosd.values()), default=None)
    at_most("OSD resident memory, idle (largest OSD)", idle, 32.0, "MiB", "< 32 MiB (issue 7 says < 64 MiB)")
    at_most("OSD resident memory under this load (largest OSD, peak)", loaded, 128.0, "MiB", "< 128 MiB")
    bq = bringup.get("quarry")
    at_most("one-host cluster start (quarry up)", bq / 1000 if bq else None, 5.0, "s", "< 5 s")
    # An image's first snapshot (it also takes the exclusive lock), the
    # median over fresh images; older cplane output had only one sample.
    qc = cplane.get("quarry", {})
    if qc.get("snap_create_first_median_ms") is not None:
        at_most(f"snapshot create, an image's first (librbd call, median of "
                f"{qc.get('snap_create_first_samples')} images)",
                qc["snap_create_first_median_ms"], 5.0, "ms", "< 5 ms")
    else:
        at_most("snapshot create (librbd call)", qc.get("snap_create_ms"), 5.0, "ms", "< 5 ms")
    cl = cplane.get("quarry", {}).get("clones_total_ms")
    n_cl = cplane.get("quarry", {}).get("clones", 100)
    at_most(f"{n_cl} clones of a 10 GiB image (librbd calls)", cl / 1000 if cl else None, 0.35, "s",
            "< 0.35 s total (issue 7 says < 1 s)")
    build = load(os.path.join(raw, "build.json"), {})
    if build.get("clean_build_ms") is not None:
        at_most(f"clean release build of the workspace, {build.get('cores', '?')} cores",
                build["clean_build_ms"] / 60000, 5.0, "min", "< 5 min")
    else:
        targets.append({"target": "clean release build of the workspace", "goal": "< 5 min", "measured": None,
                        "unit": "", "status": "not measured in this run (full runs only)"})

    # Per-job table.
    jobs = []
    for job in RBD_JOBS:
        row = {"job": job}
        for s in ("ceph", "quarry", "file"):
            rs = runs.get((s, job))
            if not rs:
                continue
            row[s] = {k: agg(s, job, k) for k in ("iops", "mib_s", "mean_lat_us", "p99_clat_us",
                                                  "daemon_cpu_us_per_io", "client_cpu_us_per_io",
                                                  "machine_busy_cores", "daemon_vcs_per_io",
                                                  "daemon_ivcs_per_io", "client_vcs_per_io",
                                                  "client_ivcs_per_io")}
            row[s]["passes"] = rs
        qi = row.get("quarry", {}).get("iops")
        row["quarry_over_ceph_iops"] = ratio(qi, row.get("ceph", {}).get("iops"))
        row["quarry_over_limit_iops"] = ratio(qi, row.get("file", {}).get("iops"))
        if job in DURABLE_OF:
            row["quarry_over_durable_limit_iops"] = ratio(qi, agg("file", DURABLE_OF[job], "iops"))
        jobs.append(row)
    durable = []
    for job in DURABLE_JOBS:
        if runs.get(("file", job)):
            durable.append({"job": job, **{k: agg("file", job, k) for k in ("iops", "mib_s", "mean_lat_us", "sync_lat_us",
                                                                          "p99_clat_us")},
                            "passes": runs[("file", job)]})

    # What no primary-copy design can beat on this machine: the client's round trip to the primary, the
    # primary's round trip to a replica and that replica's fdatasync happen one after another.
    rtt = (ping.get(64) or {}).get("mean_us")
    repl_floor = round(2 * float(rtt) + floor, 1) if rtt and floor else None

    result = {
        "machine": machine,
        "loadavg_end": end.get("loadavg_end"),
        "systems": systems,
        "librbd_loaded": libpath,
        "librbd_verified_runs": lib_checked,
        "targets": targets,
        "jobs": jobs,
        "durable_limit": durable,
        "loopback": ping,
        "replicated_write_floor_us": repl_floor,
        "memory_mib": mem,
        "bringup_ms": bringup,
        "control_plane_librbd_ms": cplane,
        "control_plane_cli_ms": cli,
    }
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(result, fh, indent=1)

    L = []
    w = L.append
    quick = machine.get("quick")
    w("# Quarry vs Ceph vs the machine's limit" + (" (--quick run: short, small image; not comparable)" if quick else ""))
    w("")
    w(f"Run {machine.get('date', '?')} by `bench/run.sh{' --quick' if quick else ''}` at Quarry commit "
      f"{machine.get('quarry_commit', '?')}. Raw fio JSON and /proc samples are written to `raw/` beside this file (not committed). Method: `bench/README.md`.")
    note = os.environ.get("BENCH_NOTE")
    if note:
        w("")
        w(f"**Note on this run:** {note}")
    w("")
    w("## Machine")
    w(f"- {machine.get('nproc')} cores ({machine.get('cpu')}), {machine.get('mem_bytes', 0) / (1 << 30):.1f} GiB RAM, "
      f"kernel {machine.get('kernel')}")
    w(f"- disk: {machine.get('disk')}; every cluster and the limit's file live on it")
    w(f"- {machine.get('fio')}; Ceph {machine.get('ceph_pkg')} (Debian); fio's rbd engine loaded "
      + ", ".join(f"{s}: `{p}`" for s, p in libpath.items()) + " (read from fio's /proc/PID/maps during the runs: "
      + ", ".join(f"{s} {v['verified']} of {v['runs']} runs" for s, v in lib_checked.items()) + ")")
    w(f"- load average at start {machine.get('loadavg_start')}, at end {end.get('loadavg_end')}. The machine is shared "
      "with other work (builds, tests) and noisy: the `busy` column shows how many cores the whole machine used "
      "during each rbd job; compare ratios from one run, not absolute figures across runs.")
    w("")
    w("## Targets (DESIGN.md §5; rows marked issue 3 are that issue's own cluster targets)")
    w("")
    w("| target | goal | measured | status |")
    w("|---|---|---|---|")
    for t in targets:
        w(f"| {t['target']} | {t['goal']} | {fmt(t['measured'], 2)} {t['unit']} | {t['status']} |")
    w("")
    w("## fio jobs (ioengine=rbd for Ceph and Quarry; libaio direct=1 on a file for the limit)")
    w("")
    w(f"Each job: time-based, {machine.get('runtime_s', '?')} s after a {machine.get('ramp_s', '?')} s ramp, on a "
      f"{machine.get('size', '?')} image prefilled with 4 MiB writes; values are the mean of the passes, per-pass values in parentheses. Mean latency is fio's `lat_ns` mean, p99 is `clat_ns` p99 "
      "(for randrw the worse of read and write). Daemon CPU = utime+stime of the mon and all OSDs over the measured "
      "window / I/Os; client CPU = fio's whole process (its threads and librbd's, from /proc over the same window; fio's own usr/sys_cpu for the file target, whose I/O is its job thread's) / I/Os. busy = cores the whole machine used. `switches/IO` = context switches of all the daemons' threads (resp. fio's) per I/O over the same window, voluntary + involuntary: a voluntary one is a thread that slept and was woken, the hand-offs that dominate small-I/O latency on this VM.")
    w("")
    w("| job | system | IOPS | MiB/s | mean lat µs | p99 clat µs | daemon CPU µs/IO | client CPU µs/IO | daemon switches/IO | client switches/IO | busy |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in jobs:
        job = row["job"]
        for s in ("ceph", "quarry", "file"):
            if s not in row:
                continue
            r = row[s]
            name = {"file": "limit (file)"}.get(s, s)
            w(f"| {job} | {name} | {fmt(r['iops'])} ({each(s, job, 'iops')}) | {fmt(r['mib_s'])} | "
              f"{fmt(r['mean_lat_us'])} ({each(s, job, 'mean_lat_us')}) | {fmt(r['p99_clat_us'])} | "
              f"{fmt(r['daemon_cpu_us_per_io'])} | {fmt(r['client_cpu_us_per_io'])} | "
              f"{switches(r, 'daemon')} | {switches(r, 'client')} | {fmt(r['machine_busy_cores'], 2)} |")
    w("")
    w("| job | Quarry/Ceph IOPS | Quarry/limit IOPS | Quarry/durable limit IOPS |")
    w("|---|---|---|---|")
    for row in jobs:
        w(f"| {row['job']} | {fmt(row['quarry_over_ceph_iops'], 2)} | {fmt(row['quarry_over_limit_iops'], 3)} | "
          f"{fmt(row.get('quarry_over_durable_limit_iops'), 3)} |")
    w("")
    w("## The disk's durable-write limit (libaio direct=1 + fdatasync/fsync after every write)")
    w("")
    w("fio times the write (`mean lat`) apart from the fdatasync/fsync it issues after it (`sync lat`); a durable "
      "write costs both, so the QD1 floor above is 1/IOPS of the first row.")
    w("")
    w("| job | IOPS | MiB/s | mean lat µs (write) | sync lat µs | p99 clat µs |")
    w("|---|---|---|---|---|---|")
    for d in durable:
        w(f"| {d['job']} | {fmt(d['iops'])} ({each('file', d['job'], 'iops')}) | {fmt(d['mib_s'])} | "
          f"{fmt(d['mean_lat_us'])} | {fmt(d.get('sync_lat_us'))} | {fmt(d['p99_clat_us'])} |")
    w("")
    w("## Loopback TCP round trip (127.0.0.1, TCP_NODELAY, bench/src/pingpong.c)")
    w("")
    w("Also over an abstract Unix socket (`pingpong SIZE N unix`): Quarry's clients and OSDs reach an OSD in their own "
      "network namespace that way (ARCHITECTURE.md, Decisions, local Unix sockets); Ceph's use TCP. The targets below "
      "keep the TCP round trip, as DESIGN.md defines them.")
    w("")
    w("| transport | message | round trips | mean µs | p50 µs | p99 µs |")
    w("|---|---|---|---|---|---|")
    for kind, table in (("TCP", ping), ("Unix", ping_unix)):
        for n, p in table.items():
            if p:
                w(f"| {kind} | {n} B | {p['n']} | {p['mean_us']} | {p['p50_us']} | {p['p99_us']} |")
    w("")
    if repl_floor:
        w(f"A replicated write waits for the client's round trip to the primary, the primary's round trip to a replica "
          f"and that replica's fdatasync, one after another: 2 × {fmt(float(rtt))} µs + {fmt(floor)} µs = "
          f"**{fmt(repl_floor)} µs** is the least any primary-copy design (Ceph's or Quarry's) can reach here for a 4 KiB "
          f"write at QD1; the §5 target (1.25 × the durable floor alone) is below it whenever the loopback round trip "
          f"exceeds an eighth of the floor.")
        w("")
    w("## Daemon resident memory (MiB)")
    w("")
    w("| system | daemon | at rest (before load) | peak under the fio jobs | of which anonymous | at rest after them |")
    w("|---|---|---|---|---|---|")
    for s, ds in mem.items():
        for n, v in ds.items():
            w(f"| {s} | {n} | {fmt(v['rest_mib'])} | {fmt(v['peak_load_mib'])} | {fmt(v['peak_load_anon_mib'])} | "
              f"{fmt(v['after_load_mib'])} |")
    w("")
    w("RSS is VmRSS (anonymous + file-backed pages mapped by the process); the anonymous part is the daemon's own heap.")
    w("")
    w("## Bring-up and control plane (wall time, ms)")
    w("")
    keys = [("connect_ms", "connect (rados_connect + ioctx)"), ("create_10g_ms", "create 10 GiB image"),
            ("snap_create_ms", "snapshot create"),
            ("snap_create_first_median_ms", "snapshot create, an image's first, median of fresh images"),
            ("snap_create_first_max_ms", "snapshot create, an image's first, max"),
            ("snap_create_median_ms", "snapshot create, median of 10 more"),
            ("snap_protect_ms", "snapshot protect"),
            ("clones_total_ms", "N clones, total"), ("clone_median_ms", "one clone, median"),
            ("clone_max_ms", "one clone, max"), ("remove_clones_total_ms", "remove the N clones, total"),
            ("snap_unprotect_ms", "snapshot unprotect"), ("snap_remove_ms", "snapshot remove"),
            ("remove_image_ms", "remove the 10 GiB image")]
    hdr = " | ".join(systems)
    w(f"| operation | {hdr} |" + (" Quarry/Ceph |" if have_ceph else ""))
    w("|---|" + "---|" * (len(systems) + (1 if have_ceph else 0)))
    w("| cluster bring-up (ceph: bench/ceph-up.sh; quarry: quarry up) | "
      + " | ".join(fmt(bringup.get(s)) for s in systems) + " |"
      + (f" {fmt(ratio(bringup.get('quarry'), bringup.get('ceph')), 3)} |" if have_ceph else ""))
    n_lib = cplane.get("quarry", {}).get("clones", "?")
    w(f"| **librbd calls** (bench/src/cplane.c, N = {n_lib}) |" + " |" * (len(systems) + (1 if have_ceph else 0)))
    for k, label in keys:
        vals = [cplane.get(s, {}).get(k) for s in systems]
        w(f"| {label} | " + " | ".join(fmt(v, 2) for v in vals) + " |"
          + (f" {fmt(ratio(cplane['quarry'].get(k), cplane['ceph'].get(k)), 3)} |" if have_ceph else ""))
    n_cli = cli.get("quarry", {}).get("clones", "?")
    w(f"| **rbd CLI** (one process per command, start-up included; N = {n_cli}) |"
      + " |" * (len(systems) + (1 if have_ceph else 0)))
    for k, label in [("ls_ms", "rbd ls (≈ CLI start-up + connect)")] + keys[1:]:
        if k in ("clone_median_ms", "clone_max_ms", "remove_clone_median_ms"):
            continue
        vals = [cli.get(s, {}).get(k) for s in systems]
        if all(v is None for v in vals):
            continue
        w(f"| {label} | " + " | ".join(fmt(v, 2) for v in vals) + " |"
          + (f" {fmt(ratio(cli['quarry'].get(k), cli['ceph'].get(k)), 3)} |" if have_ceph else ""))
    w("")
    if not have_ceph:
        w("Ceph was **not run** (see the run's log): every Quarry/Ceph ratio and Ceph-relative target is n/a.")
        w("")
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write("\n".join(L))

    # Latency plot (optional: CI has no matplotlib).
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report.py: matplotlib not installed: no latency.png (apt-get install python3-matplotlib)",
              file=sys.stderr)
        return 0
    labels = [r["job"] for r in jobs]
    present = [s for s in ("ceph", "quarry", "file") if any(s in r for r in jobs)]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / len(present)
    colors = {"ceph": "#d62728", "quarry": "#1f77b4", "file": "#7f7f7f"}
    for ax, key, title in ((axes[0], "mean_lat_us", "mean latency (fio lat_ns)"),
                           (axes[1], "p99_clat_us", "p99 completion latency")):
        for i, s in enumerate(present):
            vals = [r.get(s, {}).get(key) or 0 for r in jobs]
            xs = [x + (i - (len(present) - 1) / 2) * width for x in range(len(labels))]
            ax.bar(xs, vals, width, label={"file": "limit (file, direct)"}.get(s, s), color=colors[s])
        ax.set_yscale("log")
        ax.set_ylabel("µs (log scale)")
        ax.set_title(title)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"fio rbd engine: Ceph vs Quarry vs the disk ({machine.get('date', '')})")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "latency.png"), dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
