"""The benchmark's per-request cost of a server: CPU time, context switches and system calls that the
server's processes spend per request (or message, or handshake) of one maillab-load run, so every
change shows where it moved the cost and not only the rate.

  meter = Meter([pid, ...])        # before the run: every thread of these processes
  ...the load...
  cost = meter.finish(completed)   # {"cpu_us": ..., "ctxsw": ..., "syscalls": None}
  cost["syscalls"] = syscalls_per_request([pid, ...], load_command)

CPU: utime + stime of /proc/PID/stat (every thread's, the exited ones' included), in clock ticks.
Context switches: voluntary + nonvoluntary of /proc/PID/task/*/status, summed over the threads
alive at each end (a thread born and gone inside the run is missed; the servers keep their pools).
System calls: a second, short run of the same load with `perf stat -e raw_syscalls:sys_enter` attached
(syscalls_per_request), when perf is installed and allowed to (root, or perf_event_paranoid <= 1)."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid):
    """The direct children of pid (nginx's workers under its master)."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def context_switches(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            pass  # the thread ended between listing and reading
    return total


def perf_usable():
    if not shutil.which("perf"):
        return False
    if os.geteuid() == 0:
        return True
    try:
        return int(open("/proc/sys/kernel/perf_event_paranoid").read()) <= 1
    except (OSError, ValueError):
        return False


class Meter:
    def __init__(self, pids):
        self.pids = list(pids)
        self.cpu = sum(cpu_ticks(p) for p in self.pids)
        self.ctxsw = sum(context_switches(p) for p in self.pids)

    def finish(self, completed):
        cpu = sum(cpu_ticks(p) for p in self.pids) - self.cpu
        ctxsw = sum(context_switches(p) for p in self.pids) - self.ctxsw
        n = max(completed, 1)
        return {"cpu_us": cpu * 1e6 / TICKS / n, "ctxsw": ctxsw / n, "syscalls": None, "completed": completed}


def syscalls_per_request(pids, cmd, seconds=2):
    """System calls per request of the servers `pids` under the maillab-load command `cmd`, run again
    for `seconds` with `perf stat -e raw_syscalls:sys_enter` attached: a run of its own, because
    counting the tracepoint slows a server by up to a fifth (nginx's static GETs: 11,100/s -> 8,800/s
    measured here) and the rates must not carry that. None when perf cannot count."""
    if not perf_usable():
        return None
    cmd = list(cmd)
    json_path = cmd[cmd.index("--json") + 1] + ".syscalls"
    cmd[cmd.index("--duration") + 1] = str(seconds)
    cmd[cmd.index("--json") + 1] = json_path
    cmd.append("--quiet")
    out_path = tempfile.NamedTemporaryFile(prefix="maillab-perf-", suffix=".csv", delete=False).name
    perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o", out_path,
                             "-p", ",".join(str(p) for p in pids)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)  # perf has no ready signal; attaching to every thread takes it a moment
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        perf.send_signal(signal.SIGINT)  # perf stat writes its counts when interrupted
        perf.wait(timeout=10)
        completed = json.loads(open(json_path).read().splitlines()[-1])["completed"]
        for line in open(out_path):
            parts = line.strip().split(",")
            if len(parts) > 2 and "raw_syscalls:sys_enter" in parts[2] and parts[0].isdigit() and completed:
                return int(parts[0]) / completed
        return None
    except (subprocess.TimeoutExpired, OSError, ValueError, IndexError, KeyError):
        return None
    finally:
        if perf.poll() is None:
            perf.kill()
            perf.wait()
        for path in (out_path, json_path):
            if os.path.exists(path):
                os.unlink(path)


def describe(cost):
    """One line for the bench's output."""
    sc = (f"{cost['syscalls']:.1f} system calls" if cost.get("syscalls") is not None
          else "system calls not counted (QUICK, or no perf)")
    return f"  server cost per request: {cost['cpu_us']:.1f} µs CPU, {sc}, {cost['ctxsw']:.1f} context switches"


def report_lines(results):
    """docs/benchmarks.md's table of the runs that were metered."""
    metered = [r for r in results if r.get("cost")]
    if not metered:
        return []
    lines = ["", "## Per-request cost on the server", "",
             "Server CPU time (utime + stime of every thread, /proc/PID/stat), system calls (`perf stat -e "
             "raw_syscalls:sys_enter -p PID` during a second, 2 s run of the same load: counting slows a server "
             "by up to a fifth, so not during the run whose rate is shown) and context switches (voluntary + nonvoluntary, "
             "/proc/PID/task/*/status) per message, request or handshake of the run; nginx's are its workers'. "
             "The load generator's own cost is not in them.", "",
             "| run | server CPU µs | system calls | context switches |", "|---|---|---|---|"]
    for r in metered:
        c = r["cost"]
        sc = f"{c['syscalls']:.1f}" if c.get("syscalls") is not None else "–"
        lines.append(f"| {r['label']} | {c['cpu_us']:.1f} | {sc} | {c['ctxsw']:.1f} |")
    return lines
