"""The benchmark's own tools work (their figures are measured in `make bench`, never asserted here):
the per-request cost meter reads a real server's CPU time and context switches, and the preload
that MailDev runs with answers smtp-server's reverse DNS lookups itself, so no query leaves loopback."""

import os
import subprocess
import time

from tests.bench import server_cost
from tests.e2e.harness import Server, Skip, messages, register, run_client, test

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


@test
def the_cost_meter_counts_a_servers_cpu_time_and_context_switches(lab):
    with Server(lab, "senderserver") as sender:
        password = register(lab, sender.port, "ana")
        meter = server_cost.Meter([sender.proc.pid])
        # Sessions until the server's CPU time has moved: /proc counts it in clock ticks (10 ms), and a
        # cached login costs less than a tick, so a fixed few sessions may read as none.
        sessions = 0
        while sessions < 3 or (sessions < 200 and server_cost.cpu_ticks(sender.proc.pid) <= meter.cpu):
            out = run_client(lab, sender.port, ["--user", "ana", "--password", password])
            assert out.returncode == 0, out.stderr
            sessions += 1
        cost = meter.finish(sessions)
        assert cost["completed"] == sessions
        assert cost["cpu_us"] > 0, cost
        assert cost["ctxsw"] > 0, cost
        assert cost["syscalls"] is None  # counted only by syscalls_per_request, in a run of its own
        assert "µs CPU" in server_cost.describe(cost)


@test
def the_maildev_preload_answers_reverse_dns_at_once_with_no_name(lab):
    node = "node" if subprocess.run(["sh", "-c", "command -v node"], capture_output=True).returncode == 0 else None
    if not node:
        raise Skip("node is not installed (make bench installs Debian's nodejs for the MailDev comparison)")
    # 192.0.2.1 (TEST-NET-1, RFC 5737) has no PTR record: without the preload, node would ask the
    # resolver and wait for its answer.
    script = ("const dns = require('node:dns');"
              "dns.reverse('192.0.2.1', (err, names) => console.log(JSON.stringify({err: err && err.code, names})));"
              "dns.promises.reverse('192.0.2.1').then(names => console.log(JSON.stringify({promise: names})));")
    started = time.monotonic()
    out = subprocess.run([node, "--require", os.path.join(BENCH, "maildev_no_reverse_dns.cjs"), "-e", script],
                         capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, MAILLAB_REVERSE_DNS_COUNT="1"))
    assert out.returncode == 0, out.stderr
    assert '{"err":null,"names":[]}' in out.stdout, out.stdout
    assert '{"promise":[]}' in out.stdout, out.stdout
    assert "reverse lookups answered locally: 1" in out.stderr, out.stderr
    assert time.monotonic() - started < 10, "the lookup waited for a resolver"


@test
def the_load_generator_pipelines_where_the_sender_offers_it(lab):
    """maillab-load --pipelining sends RFC 2920 groups (AUTH PLAIN with MAIL, RCPT and DATA; the content
    with QUIT, or with RSET when kept open) once the EHLO reply offers PIPELINING: every message is
    answered and stored, and none is counted that was not."""
    import json
    with Server(lab, "senderserver") as sender:
        password = register(lab, sender.port, "ana")
        register(lab, sender.port, "bob")
        for extra, count in (([], 12), (["--keep-open"], 9)):
            out_json = lab.path("load.jsonl")
            if os.path.exists(out_json):
                os.unlink(out_json)
            out = subprocess.run([lab.exe("maillab-load"), "--scenario", "smtp", "--port", str(sender.port),
                                  "--count", str(count), "--duration", "60", "--connections", "2", "--pipelining",
                                  "--user", "ana@447.edu", "--password", password, "--to", "bob@447.edu",
                                  "--size", "2000", "--json", out_json, "--quiet"] + extra,
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            result = json.loads(open(out_json).read().splitlines()[-1])
            assert result["pipelining"] is True
            assert result["completed"] == count, result
            assert not {k: v for k, v in result.get("errors", {}).items() if not k.startswith("(info)")}, result
            # Every connection saw PIPELINING offered and sent groups: one per message, or the two kept open.
            assert result["errors"].get("(info) pipelined") == (count if not extra else 2), result
        stored = [s for s, _ in messages(sender.db, "bob@447.edu")]
        assert stored.count("load") == 12 + 9, stored
