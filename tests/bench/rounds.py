"""Interleaved rounds for the benchmark's comparisons (make bench): each figure is run for every
server, server after server, round after round, the order reversed in every other round (A, B, B, A,
...), so that a noisy neighbour on the shared cores, or the machine's own drift, hurts every server
alike; a figure is the median of its rounds. Used by the aiosmtpd comparison (bench.py) and the
MailDev one (maildev_peer.py).

  figures = [(key, what, scenario, {who: (port, extra args, pids)}, count), ...]
  runs = interleave(bench, figures, rounds, seconds, ("maillab", "MailDev"))
  runs[key][who] -> [maillab-load result, ...] (one per round; a server absent from a figure has none)"""


def median(values):
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def interleave(b, figures, rounds, seconds, names):
    runs = {key: {who: [] for who in names} for key, *_ in figures}
    for n in range(rounds):
        order = names if n % 2 == 0 else tuple(reversed(names))
        for key, what, scenario, by_server, count in figures:
            for who in order:
                if who not in by_server:
                    continue
                port, extra, pids = by_server[who]
                res = b.load(f"{who} {what}, round {n + 1}", scenario, port, extra, count, seconds, pids)
                b.results.pop()  # shown in its own section, not among the bench's single runs
                runs[key][who].append(res)
    return runs


def median_rate(results):
    return median([r["per_second"] for r in results]) if results else 0.0
