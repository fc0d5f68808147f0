"""The report's section for a TLS failure scenario capture (captures/scenarios.py, `make capture
SCENARIO=...`): which side noticed, the alert on the wire (level, description, number; whether its
record was encrypted and decoded with the embedded key log), the frames, and what the client told its
user (from the .scenario.json beside the capture).

    from report import scenarios
    scenarios.scenario_section("captures/scenario-expired.pcapng")   # HTML, or None for other captures

    /usr/bin/python3 -m report.scenarios captures/scenario-expired.pcapng   # the same, as text

Reads the capture with stock tshark (the scenarios run on ports 465 and 443, which tshark decodes as
TLS with no settings); the HTML is escaped, with no scripts."""

import html
import json
import os
import re
import subprocess
import sys

from captures.facts import ALERTS, printable, tshark

# RFC 8446 6: an alert's level. And what each alert of the scenarios means, with where it is defined.
LEVELS = {"1": "warning", "2": "fatal"}
MEANING = {
    "bad_certificate": "the certificate was refused for itself: OpenSSL sends this when it does not name the "
                       "host the client asked for (RFC 8446 6.2; the name check is RFC 6125)",
    "unknown_ca": "the certificate chain does not end at a CA the client trusts (RFC 8446 6.2)",
    "certificate_expired": "the certificate is past its notAfter date (RFC 8446 6.2; RFC 5280 4.1.2.5)",
    "protocol_version": "the peer offered no TLS version this side accepts: the lab allows TLS 1.3 only "
                        "(RFC 8446 6.2 and 4.2.1)",
    "no_application_protocol": "the client offered ALPN protocols and the server speaks none of them "
                               "(RFC 7301 3.2)",
}
# What a scenario's captures show when no alert is sent: the server's clear-text answers.
CLEAR_ANSWERS = (("421 ", "smtp"), ("HTTP/1.1 400", "http"))
KEY_LOG_NOTE = "note: writing TLS secrets"


def sidecar(path):
    """captures/scenario-x.pcapng -> captures/scenario-x.scenario.json (as captures/scenarios.py writes it)."""
    base = path[:-len(".pcapng")] if path.endswith(".pcapng") else path
    return base + ".scenario.json"


def _comment(path):
    out = subprocess.run(["capinfos", "-k", "--", path], capture_output=True, text=True, errors="replace")
    return out.stdout


def explain(pcap_path, capinfos=None):
    """The scenario's facts as a dict, or None when the file is not a scenario capture. `capinfos`:
    the file's capinfos output when the caller has read it already (its comment says the scenario)."""
    comment = capinfos if capinfos is not None else _comment(pcap_path)
    found = re.search(r"maillab mode=\w+ smtp=(\d+) http=(\d+) scenario=([\w-]+)", comment)
    if not found:
        return None
    server_ports = {int(found[1]), int(found[2])} - {0}
    record = {}
    try:
        with open(sidecar(pcap_path)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        pass
    facts = {"scenario": found[3], "story": record.get("story", ""), "clients": record.get("clients"),
             "alerts": [], "clear": [], "hello": None, "server_hello": None}
    rows = tshark(pcap_path, ["-Y", "tls.alert_message || tls.handshake.type == 1 || tls.handshake.type == 2",
                              "-T", "fields", "-E", "separator=\t", "-e", "frame.number", "-e", "tcp.srcport",
                              "-e", "tls.record.opaque_type", "-e", "tls.alert_message.level",
                              "-e", "tls.alert_message.desc", "-e", "tls.handshake.type"], check=False)
    for line in rows.splitlines():
        values = (line.split("\t") + [""] * 6)[:6]
        frame, port, opaque, level, desc, types = values
        if not frame.isdigit():
            continue
        from_server = port.isdigit() and int(port) in server_ports
        handshake = types.split(",")
        if "1" in handshake and facts["hello"] is None:
            facts["hello"] = int(frame)
        if "2" in handshake and facts["server_hello"] is None:
            facts["server_hello"] = int(frame)
        for lv, number in zip(level.split(","), desc.split(",")):
            if number:
                facts["alerts"].append({"frame": int(frame), "from": "server" if from_server else "client",
                                        "level": LEVELS.get(lv, lv), "number": int(number),
                                        "description": ALERTS.get(number, f"alert {number}"),
                                        "encrypted": "23" in opaque.split(",")})
    # Clear text where TLS should be: the first bytes of each server segment (tshark's TLS dissector
    # cannot read them as records; the TCP payload is the wire as it was).
    payloads = tshark(pcap_path, ["-o", "tcp.desegment_tcp_streams:FALSE", "-Y", "tcp.len > 0", "-T", "fields",
                                  "-E", "separator=\t", "-e", "frame.number", "-e", "tcp.srcport", "-e", "tcp.payload"],
                      check=False)
    for line in payloads.splitlines():
        values = (line.split("\t") + [""] * 3)[:3]
        if not values[0].isdigit() or not values[1].isdigit() or int(values[1]) not in server_ports:
            continue
        try:
            data = bytes.fromhex(values[2].split(",")[0].replace(":", ""))
        except ValueError:
            continue
        text = data.decode("utf-8", errors="replace")
        for prefix, service in CLEAR_ANSWERS:
            if text.startswith(prefix):
                facts["clear"].append({"frame": int(values[0]), "service": service, "text": text})
    return facts


def _noticed(facts):
    """Which side noticed, in a sentence."""
    if facts["clear"]:
        return ("The server noticed: the client's first bytes were not a TLS ClientHello (a TLS record starts "
                "with byte 0x16, RFC 8446 5.1), or the client said nothing while waiting for an SMTP banner. It "
                "answered in clear text, which the client can read, instead of a TLS alert, which it cannot.")
    if not facts["alerts"]:
        return "No alert is in this capture: the connection ended without one (see the TCP FIN or RST)."
    first = facts["alerts"][0]
    if first["from"] == "client":
        return ("The client noticed: it checks the server's certificate (chain to a trusted CA, validity dates, "
                "the host name) while the handshake runs, and ended it with an alert.")
    return ("The server noticed: what the client's ClientHello offered could not be accepted, and the server "
            "ended the handshake with an alert before sending a ServerHello.")


def _alert_lines(facts):
    lines = []
    for a in facts["alerts"]:
        how = ("encrypted (record type application_data), decoded with the key log embedded in the file"
               if a["encrypted"] else "in clear (record type alert, 21): sent before this side's "
                                       "handshake keys were in use")
        meaning = MEANING.get(a["description"], "")
        lines.append(f"frame {a['frame']}: the {a['from']} sends a {a['level']} alert {a['description']} "
                     f"({a['number']}), {how}." + (f" Meaning: {meaning}." if meaning else ""))
    return lines


def _clear_lines(facts):
    return [f"frame {c['frame']}: the server answers in clear text ({c['service'].upper()}): "
            f"{c['text'].strip().splitlines()[0] if c['text'].strip() else ''}" for c in facts["clear"]]


def _client_runs(facts):
    runs = facts["clients"]
    if runs is None:
        return None
    shown = []
    for r in runs:
        lines = (str(r.get("stdout", "")) + str(r.get("stderr", ""))).strip().splitlines()
        # The key log note is the scenario's own doing (it records the secrets), not the failure's.
        said = "\n".join(printable(line) for line in lines if not line.startswith(KEY_LOG_NOTE))
        shown.append({"command": printable(r.get("command", "")), "exit": r.get("exit"), "said": said})
    return shown


def as_text(facts):
    out = [f"TLS failure scenario: {facts['scenario']}"]
    if facts["story"]:
        out.append(facts["story"])
    out.append("")
    out.append("Which side noticed: " + _noticed(facts))
    if facts["hello"]:
        out.append(f"ClientHello: frame {facts['hello']}" +
                   (f"; ServerHello: frame {facts['server_hello']}" if facts["server_hello"] else "; no ServerHello"))
    out += ["On the wire:"] + ["  " + line for line in _alert_lines(facts) + _clear_lines(facts)]
    runs = _client_runs(facts)
    out.append("What the client told its user:")
    if runs is None:
        out.append("  (not recorded: the .scenario.json beside the capture is missing)")
    for r in runs or []:
        out.append(f"  $ {r['command']}   (exit {r['exit']})")
        out += ["    " + line for line in r["said"].splitlines()]
    return "\n".join(out) + "\n"


def scenario_section(pcap_path: str, capinfos=None):
    """HTML for a scenario capture (escaped, no scripts), or None for any other capture."""
    facts = explain(pcap_path, capinfos)
    if facts is None:
        return None
    e = html.escape
    parts = [f'<section class="scenario" id="scenario-{e(facts["scenario"])}">',
             f"<h2>TLS failure scenario: {e(facts['scenario'])}</h2>"]
    if facts["story"]:
        parts.append(f"<p>{e(facts['story'])}</p>")
    parts.append(f"<p><strong>Which side noticed.</strong> {e(_noticed(facts))}</p>")
    if facts["alerts"]:
        parts.append("<table><thead><tr><th>frame</th><th>sent by</th><th>level</th><th>description</th>"
                     "<th>number</th><th>record</th></tr></thead><tbody>")
        for a in facts["alerts"]:
            parts.append(f"<tr><td>{a['frame']}</td><td>{e(a['from'])}</td><td>{e(a['level'])}</td>"
                         f"<td><code>{e(a['description'])}</code></td><td>{a['number']}</td>"
                         f"<td>{'encrypted, decoded with the key log' if a['encrypted'] else 'in clear'}</td></tr>")
        parts.append("</tbody></table>")
    lines = _alert_lines(facts) + _clear_lines(facts)
    if facts["hello"]:
        lines.insert(0, f"ClientHello: frame {facts['hello']}" +
                     (f"; ServerHello: frame {facts['server_hello']}" if facts["server_hello"] else
                      "; no ServerHello (the handshake ended before it)"))
    parts.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul>")
    parts.append("<h3>What the client told its user</h3>")
    runs = _client_runs(facts)
    if runs is None:
        parts.append("<p>Not recorded: the <code>.scenario.json</code> beside the capture is missing.</p>")
    for r in runs or []:
        parts.append(f"<p><code>$ {e(r['command'])}</code> (exit {e(str(r['exit']))})</p><pre>{e(r['said'])}</pre>")
    parts.append("</section>")
    return "\n".join(parts) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python3 -m report.scenarios captures/scenario-NAME.pcapng", file=sys.stderr)
        return 2
    if not os.path.isfile(argv[0]):
        print(f"no such file: {printable(argv[0])}", file=sys.stderr)
        return 2
    facts = explain(argv[0])
    if facts is None:
        print(f"{printable(argv[0])} is not a scenario capture (make capture SCENARIO=... makes one)")
        return 1
    sys.stdout.write(as_text(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
