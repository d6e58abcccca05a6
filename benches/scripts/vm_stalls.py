#!/usr/bin/env python3
"""How long this machine keeps a thread from running, below the scheduler.

The ring-buffer benchmark's drops at a 1 MiB ring are single stalls of the
consumer (see docs/src/hot-path.md). This measures the two kinds a consumer
meets on a virtual machine, without any BPF:

- sleep: a thread on CPU 1 sleeps 0.5 ms again and again (nanosleep, and
  epoll_wait with a 1 ms timeout), once with CPU 0 idle and once with CPU 0
  busy making syscalls as the benchmark's producer does. The overshoot is
  how late an idle CPU is woken.
- spin: a thread spins on CPU 1 reading the clock, alone and then with a
  second one spinning on CPU 0. A gap between two reads is time the thread
  was not running although it never slept: the vCPU was taken away.

    python3 benches/scripts/vm_stalls.py [SECONDS]   # default 5 per case

Needs two CPUs. Prints counts of stalls over 1 and 2 ms and the longest.
"""

import multiprocessing
import os
import select
import sys
import time


def report(name, stalls, n=None):
    stalls = sorted(stalls)
    over1 = sum(1 for s in stalls if s > 1e-3)
    over2 = sum(1 for s in stalls if s > 2e-3)
    longest = stalls[-1] * 1e3 if stalls else 0.0
    count = f"{n} waits, " if n is not None else ""
    print(f"{name:<44} {count}{over1} over 1 ms, {over2} over 2 ms, longest {longest:.2f} ms", flush=True)


def sleeper(secs, how):
    os.sched_setaffinity(0, {1})
    ep = select.epoll()
    late = []
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.monotonic()
        if how == "nanosleep":
            time.sleep(0.0005)
            want = 0.0005
        else:
            ep.poll(0.001)
            want = 0.001
        late.append(time.monotonic() - t - want)
    return late


def spinner(secs, cpu, out=None):
    os.sched_setaffinity(0, {cpu})
    gaps = []
    end = time.monotonic() + secs
    prev = time.monotonic()
    while prev < end:
        t = time.monotonic()
        if t - prev > 0.0005:
            gaps.append(t - prev)
        prev = t
    if out is not None:
        out.put(gaps)
    return gaps


def busy_syscalls(secs):
    os.sched_setaffinity(0, {0})
    end = time.monotonic() + secs
    while time.monotonic() < end:
        for _ in range(1000):
            os.getpgid(0)


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs two CPUs")
    for how in ("nanosleep", "epoll_wait"):
        late = sleeper(secs, how)
        report(f"sleep ({how}) on CPU 1, CPU 0 idle", late, len(late))
    busy = multiprocessing.Process(target=busy_syscalls, args=(secs + 0.5,))
    busy.start()
    time.sleep(0.2)
    late = sleeper(secs, "nanosleep")
    busy.join()
    report("sleep (nanosleep) on CPU 1, CPU 0 busy", late, len(late))
    report("spin on CPU 1 alone: gaps", spinner(secs, 1))
    q = multiprocessing.Queue()
    other = multiprocessing.Process(target=spinner, args=(secs, 0, q))
    other.start()
    mine = spinner(secs, 1)
    theirs = q.get()
    other.join()
    report("spin on CPU 1 and CPU 0 at once: gaps CPU 1", mine)
    report("spin on CPU 1 and CPU 0 at once: gaps CPU 0", theirs)


if __name__ == "__main__":
    main()
