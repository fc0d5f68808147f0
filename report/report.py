#!/usr/bin/python3
"""make report: turns one or more captures into report/<name>/ — TLS handshake and record tables, a
ladder diagram per connection (mscgen, SVG and PNG), the decrypted SMTP and HTTP conversations, tshark's
TCP conversation and protocol-hierarchy statistics, and a side-by-side of the captures (plaintext,
STARTTLS, implicit TLS: frames, bytes, what an eavesdropper sees). Written as Markdown and as HTML
(pandoc).

  python3 -m report.report captures/lab-implicit.pcapng captures/lab-starttls.pcapng captures/lab-off.pcapng [--name lab]
  (from the repository's top folder; `make report` runs it)"""

import argparse
import html
import html.parser
import os
import re
import shutil
import subprocess
import sys

from captures.facts import Capture, decode_credentials, printable

try:  # the TLS failure scenarios' explanations (report/scenarios.py), when that part is there
    from report import scenarios
except ImportError:
    scenarios = None

MODE_TITLES = {"implicit": "implicit TLS (RFC 8314)", "starttls": "STARTTLS (RFC 3207)", "off": "plaintext"}


# ---- text from a capture, as Markdown that is only text ---------------------------------------------
# Everything a capture says (an EHLO name, a URI, an SNI, a decoded password, a file name) is data: it
# reaches pandoc escaped, so that no HTML, link, image or code span can be made of it (pandoc 2.17's
# gfm reader passes raw HTML whatever -raw_html says). Control characters are shown as \xNN.

class Md(str):
    """Markdown made here from escaped pieces: md_table() takes it as it is."""


def md_text(value):
    """Any text as Markdown that shows exactly that text: Markdown's active characters (HTML, links,
    images, code, emphasis, entities, {attributes}) backslash-escaped, control characters written \\xNN."""
    if isinstance(value, Md):
        return value
    return Md(re.sub(r"([\\`*~<>\[\]!&#{}])", r"\\\1", printable(value)))


def md_code(value):
    """Text as a code span, fenced with more backticks than it holds (so it cannot close early)."""
    text = printable(value)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    return Md("`" * (longest + 1) + pad + text + pad + "`" * (longest + 1))


def md_block(text):
    """Text as a fenced code block (tshark's statistics)."""
    text = "\n".join(printable(line) for line in str(text).splitlines())
    longest = max((len(run) for run in re.findall(r"`{3,}|~{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return Md(f"{fence}\n{text}\n{fence}\n")


# Budgets per capture (issue 18 #6): a file of thousands of connections gets a report of a bounded
# size, each table its first rows and the count of the rest; main() sets them from the command line.
LIMITS = {"rows": 500, "connections": 50}


def md_table(headers, rows):
    def cell(v):
        return md_text(v).replace("|", "\\|")
    rows = list(rows)
    shown = rows[:LIMITS["rows"]]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown]
    more = f"\n(the first {len(shown)} rows; {len(rows) - len(shown)} more left out: `--max-rows`)\n" \
        if len(rows) > len(shown) else ""
    return "\n".join(lines) + "\n" + more


# A NUL byte of decoded credentials (AUTH PLAIN's separator, RFC 4616): one marked box, never the
# two characters \0 run into the text, where "\077277447" would read as an octal escape.
NUL_MARK = '`\\0`{.nul title="one NUL byte (0x00): the separator of AUTH PLAIN, RFC 4616"}'


def decoded_credentials(found):
    """What credentials decode to, as code spans that may break anywhere (class credential), each NUL
    byte a marked \\0 box between them."""
    raw = found.raw or found.decoded.encode()
    pieces = [md_code(part.decode(errors="replace")) + "{.credential}" if part else "" for part in raw.split(b"\0")]
    return Md(NUL_MARK.join(pieces))


def explain_auth(text):
    """AUTH PLAIN's argument and Basic credentials are base64, not encryption: show what they decode
    to (captures/facts.py's decoder, the one grading uses)."""
    found = decode_credentials(text)
    if not found:
        return md_text(text)
    words = text.split()
    return Md(" ".join(md_text(w) for w in words[:-1]) + " " + md_code(words[-1]) + "{.credential} ⟶ base64 of " +
              decoded_credentials(found))


def ladder(cap, stream, smtp, http, records, out_dir, kinds=("svg", "png")):
    """An mscgen message sequence chart of one connection: one arrow per TLS record (with the
    handshake messages it carries) and per SMTP line or HTTP message it decrypts to. kinds: the
    images drawn (a report for grading draws the SVG only: mscgen's PNG costs ten times as much)."""
    events = []
    # Wire order: by frame, and within a frame in the order tshark lists the records (never by name).
    for order, r in enumerate(x for x in records if x["stream"] == stream):
        label = r.get("wire_type", r["type"])
        inner = r["type"] if r.get("wire_type", r["type"]) != r["type"] else ""
        if r.get("carries"):
            inner = r["carries"]
        if r.get("handshake"):
            inner = (inner + ": " if inner else "") + ", ".join(r["handshake"])
        if r.get("alert"):
            inner = (inner + ": " if inner else "") + r["alert"]
        text = f"TLS {label}" + (f" [{inner}]" if inner else "") + f" ({r['length']} B, {r['time']:.3f} s)"
        events.append((r["frame"], order, r["dir"], text, "#555555"))
    # TCP's own opening and closing (SYN, SYN-ACK, FIN, RST), from one cached tshark run.
    flags = cap.fields("tcp.flags.syn == 1 || tcp.flags.fin == 1 || tcp.flags.reset == 1",
                       ["frame.number", "tcp.stream", "tcp.srcport", "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin",
                        "tcp.flags.reset", "frame.time_relative"])
    for f in flags:
        if f["tcp.stream"] != str(stream):
            continue
        on = lambda v: v in ("1", "True")  # noqa: E731 (tshark 4.0 prints 1, 4.2+ True)
        name = ("SYN-ACK" if on(f["tcp.flags.ack"]) else "SYN") if on(f["tcp.flags.syn"]) else \
               ("RST" if on(f["tcp.flags.reset"]) else "FIN")
        events.append((int(f["frame.number"]), -1, cap.direction(f),
                       f"TCP {name} ({float(f['frame.time_relative'] or 0):.3f} s)", "#999999"))
    for line in smtp:
        if line["stream"] == stream:
            events.append((line["frame"], 10**6, line["dir"], line["text"][:60], "#0b5394"))
    for m in http:
        if m["stream"] == stream:
            text = f"{m['method']} {m['uri']}" if m["method"] else f"{m['status']} {m['phrase']}"
            events.append((m["frame"], 10**6, m["dir"], text[:60], "#38761d"))
    if not events:
        return None
    # The SYNs of every connection in one tshark run (cached), not one run per ladder.
    syns = cap.fields("tcp.flags.syn == 1 && tcp.flags.ack == 0",
                      ["tcp.stream", "ip.src", "ipv6.src", "tcp.srcport", "ip.dst", "ipv6.dst", "tcp.dstport"])
    ports = [dict(r, **{"ip.src": r["ip.src"] or r["ipv6.src"], "ip.dst": r["ip.dst"] or r["ipv6.dst"]})
             for r in syns if r["tcp.stream"] == str(stream)]
    client = f"{ports[0]['ip.src']}:{ports[0]['tcp.srcport']}" if ports else "client"
    server = f"{ports[0]['ip.dst']}:{ports[0]['tcp.dstport']}" if ports else "server"
    client, server = (printable(x).replace("\\", "\\\\").replace('"', '\\"') for x in (client, server))
    # Each label is written above its arrow, centred between the two lifelines, half the chart's width
    # apart: the chart is made wide enough that the longest label stays between them (mscgen's
    # default chart is 600 px for hscale 1; its PNG font is about 8 px a character).
    longest = max(len(f"#{e[0]} {e[3]}") for e in events)
    hscale = max(1.6, (longest * 8.5 + 60) * 2 / 600)
    lines = ["msc {", f'  hscale = "{hscale:.2f}";', f'  c [label="client {client}"], s [label="server {server}"];']
    for frame, _, direction, text, colour in sorted(events, key=lambda e: (e[0], e[1])):
        text = printable(text).replace("\\", "\\\\").replace('"', '\\"')
        arrow = "c=>s" if direction == "C" else "s=>c"
        lines.append(f'  {arrow} [label="#{frame} {text}", linecolour="{colour}", textcolour="{colour}"];')
    lines.append("}")
    # One name per capture and connection: the plaintext section never shows another capture's ladders.
    base = os.path.join(out_dir, f"ladder-{file_stem(cap.path)}-{stream}")
    with open(base + ".msc", "w") as f:
        f.write("\n".join(lines) + "\n")
    for kind in kinds:
        subprocess.run(["mscgen", "-T", kind, "-i", base + ".msc", "-o", f"{base}.{kind}"], check=True,
                       capture_output=True)
    return os.path.basename(base)


def file_stem(path):
    """A capture's name as a file name and link target of the report's own (letters, digits, _ . -);
    a name that needed changing gets a hash of the real one, so two captures never share ladders."""
    import hashlib
    stem = os.path.splitext(os.path.basename(path))[0]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stem).lstrip(".-") or "capture"
    if safe != stem:
        safe += "-" + hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return safe


def frames(numbers, most=8):
    """'frames 3, 5, 9' for an answer, shortened past `most`."""
    numbers = sorted({int(n) for n in numbers})
    shown = ", ".join(str(n) for n in numbers[:most]) + (f" and {len(numbers) - most} more" if len(numbers) > most else "")
    return ("frame " if len(numbers) == 1 else "frames ") + shown if numbers else "no frame"


def section(cap, out_dir, max_ladders=12, for_grading=False, shown=None):
    """One capture, as the TLS and HTTP labs ask about it: one heading per question, each answered
    from the capture with the frame numbers to look at in Wireshark, then the tables behind it.
    for_grading: the ladders as SVG images only (shown with <img>, which runs nothing in an SVG).
    shown: the file's name as handed in, when cap.path is a copy (make grade's, with the key log in it)."""
    title = MODE_TITLES.get(cap.mode, cap.mode)
    totals = cap.totals()
    md = [f"## {md_text(shown or os.path.basename(cap.path))}: {md_text(title)}\n",
          f"SMTP on port {cap.smtp_port}, HTTP on port {cap.http_port}; {totals['packets']} frames, "
          f"{totals['bytes']} bytes, {totals['connections']} TCP connections; "
          f"decryption secrets embedded: {'yes' if cap.secrets else 'no'}.\n"]
    handshakes = cap.handshakes() if cap.has_tls else []
    records = cap.tls_records() if cap.has_tls else []
    smtp = cap.smtp_lines()
    http = cap.http_messages()
    streams = sorted({r["stream"] for r in records} | {s["stream"] for s in smtp} | {m["stream"] for m in http})
    if records:
        md.append(records_question(cap, records, streams))
    if handshakes:
        md.append(client_hello_question(handshakes))
        md.append(server_hello_question(handshakes))
        md.append(certificate_question(handshakes, records))
    md.append(application_data_question(cap, records, smtp))
    md.append("### Q: What does each connection look like, message by message?\n")
    md.append("One arrow per TCP flag (SYN, FIN, RST), TLS record (type on the wire, then what it decrypts to) "
              "and SMTP line or HTTP message, in wire order, with the time since the first packet.\n")
    # A budget per file: a ladder is a tshark-free mscgen run or two, but a capture of thousands of
    # connections would make thousands of them (issue 18 #6).
    drawn = streams[:max(0, max_ladders)]
    if len(streams) > len(drawn):
        md.append(f"Drawn: the ladders of the first {len(drawn)} connections; {len(streams) - len(drawn)} more left "
                  "out (`--max-ladders`).\n")
    for stream in drawn:
        name = ladder(cap, stream, smtp, http, records, out_dir, ("svg",) if for_grading else ("svg", "png"))
        if name and for_grading:
            md.append(f"Connection {stream}:\n\n![connection {stream}]({name}.svg)\n")
        elif name:
            md.append(f"Connection {stream} ([SVG]({name}.svg)):\n\n![connection {stream}]({name}.png)\n")
    md.append(f"### Q: What did the {'HTTPS' if cap.has_tls else 'HTTP'} GETs ask for, and what came back?\n")
    if http:
        requests = [m["frame"] for m in http if m["method"]]
        md.append(f"{len(requests)} requests ({frames(requests)}); the responses follow each on the same connection.\n")
        def credentials(value):
            found = decode_credentials(value) if value else None
            return f"{found.mechanism} ({found.account})" if found else value
        md.append(md_table(["frame", "conn", "", "request / status", "content type", "Content-Length", "Authorization"],
                           [[m["frame"], m["stream"], m["dir"] + ":",
                             f"{m['method']} {m['uri']}" if m["method"] else f"{m['status']} {m['phrase']}",
                             m["type"], m["length"], credentials(m["authorization"])] for m in http]))
        from report import labs
        exchanges = labs.exchanges(cap)
        md.append(f"#### The full headers of each exchange\n")
        md.append("Every request and its response as they were on the wire (headers only; the bodies are in the "
                  "capture)" + (f"; the first {LIMITS['rows'] // 10} exchanges" if len(exchanges) > LIMITS["rows"] // 10
                                else "") + ":\n")
        for x in exchanges[:max(1, LIMITS["rows"] // 10)]:
            md.append(f"Frames {x['q']['frame.number']} → {x['r']['frame.number'] if x['r'] is not None else '-'} "
                      f"(connection {x['q']['tcp.stream']}):\n")
            md.append(labs.headers_block(x))
    else:
        md.append("Nothing readable: the HTTP connections are encrypted and the capture holds no keys.\n")
    md.append(http_questions(cap))
    md.append(pop3_question(cap, http))
    md.append("### Q: Which connections and protocols does the capture hold? (tshark -z conv,tcp and -z io,phs)\n")
    md.append(md_block(cap.stats("conv,tcp").strip()))
    md.append(md_block(cap.stats("io,phs").strip()))
    return "\n".join(md)


def records_question(cap, records, streams):
    md = ["### Q: Which TLS records does each frame carry, and of what type?\n"]
    per_frame = {}
    for r in records:
        per_frame.setdefault(r["frame"], []).append(r)
    several = {f: rs for f, rs in per_frame.items() if len(rs) > 1}
    if several:
        example, rs = min(several.items())
        md.append(f"{len(records)} records in {len(per_frame)} frames; {len(several)} frames carry more than one "
                  f"({frames(several)}). For example frame {example}: "
                  + md_text(", ".join(r.get("wire_type", r["type"]) for r in rs)) + ".\n")
    else:
        md.append(f"{len(records)} records in {len(per_frame)} frames, one record per frame.\n")
    by_stream = {}
    for r in records:
        by_stream.setdefault(r["stream"], []).append(r)
    tabled = [s for s in streams if s in by_stream]
    versions = {}
    for r in records:
        versions.setdefault(r["record_version"], []).append(r["frame"])
    md.append("Record version on the wire: " + "; ".join(f"{md_text(v or '?')} in {frames(f)}" for v, f in versions.items())
              + " (TLS 1.3 keeps the record header's version at TLS 1.2, the ClientHello's at TLS 1.0: "
              "legacy_record_version, RFC 8446 5.1).\n")
    # Connections with the same records (same directions, types and messages, in order) share one table.
    shapes = {}
    for stream in tabled:
        shape = tuple((r["dir"], r.get("wire_type", r["type"]), inner_type(cap, r), tuple(r.get("handshake", [])),
                       r.get("alert", "")) for r in by_stream[stream])
        shapes.setdefault(shape, []).append(stream)
    groups = list(shapes.values())
    if len(groups) > LIMITS["connections"]:
        md.append(f"The records of the first {LIMITS['connections']} kinds of connection; "
                  f"{len(groups) - LIMITS['connections']} more left out (`--max-connections`).\n")
    for same in groups[:LIMITS["connections"]]:
        stream = same[0]
        others = same[1:]
        md.append(f"Connection {stream}" + (f" (connections {', '.join(map(str, others))} carry the same sequence of "
                                            "records; only their frames, times and lengths differ)" if others else "")
                  + ":\n")
        rows = [[r["frame"], f"{r['time']:.6f}", "client → server" if r["dir"] == "C" else "server → client",
                 r.get("wire_type", r["type"]), inner_type(cap, r), r["length"],
                 ", ".join(r.get("handshake", [])) or r.get("alert", "")] for r in by_stream[stream]]
        md.append(md_table(["frame", "time (s)", "direction", "type on the wire", "inner type (decrypted)", "length",
                            "handshake message or alert"], rows))
    return "\n".join(md)


def inner_type(cap, r):
    """What a record really is: its inner content type once decrypted (RFC 8446 5.2), with the
    protocol an application_data record carries; "(encrypted)" without the keys, "" when the type on
    the wire is already the real one (ClientHello, ServerHello, change_cipher_spec)."""
    if r.get("carries"):
        return f"application_data ({r['carries']})"
    if r.get("wire_type", r["type"]) != r["type"]:
        return r["type"]
    if r.get("encrypted") and not r.get("decrypted"):
        return "(encrypted)" if not cap.secrets else "(not decrypted)"
    return "(none: in clear)"


def distinct_table(handshakes, frame_key, properties):
    """One row per distinct value of each property, with the connections (and frames) that share it:
    ten identical handshakes make one row each, not ten. properties: [(label, key)], all fields of
    the one message whose frame number each handshake holds under frame_key."""
    rows = []
    for label, key in properties:
        values = {}
        for h in handshakes:
            value = h.get(key, "")
            value = ", ".join(value) if isinstance(value, list) else str(value)
            values.setdefault(value, []).append(h)
        for value, hs in values.items():
            rows.append([label, value or "(none)",
                         f"all {len(hs)}" if len(hs) == len(handshakes) else
                         f"{len(hs)} of {len(handshakes)}: {frames([h.get(frame_key, 0) for h in hs], most=12)}"])
    return md_table(["field", "value", "connections (frames)"], rows)


def client_hello_question(handshakes):
    first = handshakes[0]
    md = ["### Q: What does the ClientHello offer?\n",
          f"In {frames([first.get('client_hello_frame', 0)])} the client offers the versions "
          f"{md_text(', '.join(first.get('offered_versions', [])) or '(none listed)')} (supported_versions), "
          f"{len(first.get('offered_suites', []))} cipher suites, key shares for "
          f"{md_text(', '.join(first.get('offered_groups', [])) or '(none)')}, the server name (SNI) "
          f"{md_code(first.get('sni', ''))} and a 32-byte random that starts "
          f"{md_code(first.get('client_random', '')[:8])}. "
          "The record and ClientHello versions say TLS 1.0/1.2 for compatibility with middleboxes "
          "(RFC 8446 4.1.2, 5.1); the real version is negotiated in supported_versions.\n",
          distinct_table(handshakes, "client_hello_frame", [
              ("record version", "client_record_version"),
              ("legacy_version (ClientHello version)", "client_hello_version"),
              ("supported_versions", "offered_versions"),
              ("cipher suites", "offered_suites"),
              ("key_share groups", "offered_groups"),
              ("supported_groups", "supported_groups"),
              ("signature algorithms (count)", "signature_algorithms"),
              ("SNI (server_name)", "sni"),
              ("ALPN", "alpn")]),
          "Each connection's randoms (32 bytes each, new in every handshake):\n",
          md_table(["conn", "ClientHello", "client random", "ServerHello", "server random"],
                   [[h["stream"], h.get("client_hello_frame", ""), h.get("client_random", ""),
                     h.get("server_hello_frame", ""), h.get("server_random", "")] for h in handshakes])]
    return "\n".join(md)


def server_hello_question(handshakes):
    first = handshakes[0]
    md = ["### Q: What does the ServerHello choose?\n",
          f"In {frames([first.get('server_hello_frame', 0)])} the server chooses "
          f"{md_text(first.get('chosen_version', '?'))} (in supported_versions; the ServerHello's own version field "
          f"says {md_text(first.get('server_hello_version', '?'))}), the suite {md_text(first.get('chosen_suite', '?'))} "
          f"and the group {md_text(first.get('chosen_group', '?'))}. "
          "Every connection's choice, one row per distinct value:\n"]
    md.append(distinct_table(handshakes, "server_hello_frame", [
        ("server port", "server_port"),
        ("legacy_version (ServerHello version)", "server_hello_version"),
        ("version chosen (supported_versions)", "chosen_version"),
        ("cipher suite chosen", "chosen_suite"),
        ("key_share group chosen", "chosen_group"),
        ("certificate subject", "certificate_subject"),
        ("certificate issuer", "certificate_issuer")]))
    return "\n".join(md)


def certificate_question(handshakes, records):
    first = handshakes[0]
    carried = [r["frame"] for r in records if "Certificate" in r.get("handshake", [])]
    md = ["### Q: What is in the server's certificate, and who can see it?\n"]
    if first.get("certificate_san"):
        md.append(f"The Certificate message travels in {frames(carried)}. In TLS 1.3 it is encrypted (inside "
                  "application_data records, RFC 8446 4.4.2): this table comes from the decrypted capture; an "
                  "eavesdropper sees none of it.\n")
        md.append(md_table(["field", "value"], [
            ["subject", first["certificate_subject"]], ["subjectAltName", first["certificate_san"]],
            ["issuer (the CA that signed it)", first["certificate_issuer"]],
            ["signature algorithm (the CA's)", first.get("certificate_signature_algorithm", "")],
            ["valid from", first["certificate_not_before"]], ["valid until", first["certificate_not_after"]],
            ["public key", f"{first['certificate_key']}, {first.get('certificate_pub_bytes', '?')} bytes, starting "
                           f"{first.get('certificate_pub_hex', '')[:16]}"],
            ["size (DER)", f"{first.get('certificate_der_bytes', '?')} bytes"]]))
    else:
        md.append("Not readable: in TLS 1.3 the Certificate message is encrypted (RFC 8446 4.4.2) and this capture "
                  "holds no keys. An eavesdropper learns only the server name the client asked for (SNI).\n")
    return "\n".join(md)


def application_data_question(cap, records, smtp):
    md = ["### Q: How many application-data records are there, and what SMTP do they carry?\n" if records else
          "### Q: What SMTP is on the wire?\n"]
    if records:
        app = [r for r in records if r.get("wire_type", r["type"]) == "application_data"]
        real = [r for r in app if r["type"] == "application_data"]
        md.append(f"{len(app)} records travel as application_data on the wire ({frames([r['frame'] for r in app])}); "
                  + (f"{len(real)} of them carry application data once decrypted, the others handshake messages "
                     "and alerts. " if cap.secrets else "")
                  + "In TLS 1.3 that includes every handshake message after the ServerHello (the certificate among "
                  "them): an eavesdropper sees neither the certificate nor the record types (RFC 8446 5.2).\n")
    if smtp:
        md.append(f"The SMTP dialogue, decrypted: {len(smtp)} lines in {frames([s['frame'] for s in smtp])}.\n")
        md.append(md_table(["frame", "conn", "", "line"],
                           [[s["frame"], s["stream"], s["dir"] + ":", explain_auth(s["text"])] for s in smtp]))
    else:
        md.append("Nothing readable: the SMTP connections are encrypted and the capture holds no keys.\n")
    return "\n".join(md)


def http_questions(cap):
    """The HTTP lab's questions, each answered with its frame numbers."""
    responses = cap.fields("http.response", ["frame.number", "tcp.stream", "http.response.code",
                                             "http.last_modified", "http.content_length_header", "tcp.segment.count",
                                             "tls.segment.count"])
    requests = cap.fields("http.request", ["frame.number", "tcp.stream", "http.request.method", "http.request.uri",
                                           "http.request.line"])
    if not responses and not requests:
        return ""
    md = ["### Q: The HTTP lab's questions: status codes, validators, conditional GETs, long responses\n"]
    codes = {}
    for r in responses:
        codes.setdefault(r["http.response.code"], []).append(r["frame.number"])
    md.append("- **Status codes**: " + "; ".join(f"{md_text(code)} in {frames(numbers)}" for code, numbers in
                                                 sorted(codes.items())) + ".")
    with_lm = [r for r in responses if r["http.last_modified"]]
    if with_lm:
        shown = responses[:8]
        md.append(f"- **Last-Modified**: {md_code(with_lm[0]['http.last_modified'])} (frame "
                  f"{md_text(with_lm[0]['frame.number'])}); **Content-Length** of each response: " +
                  ", ".join(f"{md_text(r['http.content_length_header'] or '-')} (frame {md_text(r['frame.number'])})"
                            for r in shown) +
                  (f" and {len(responses) - len(shown)} more" if len(responses) > len(shown) else "") + ".")
    conditional = []
    for q in requests:
        lines = q["http.request.line"]
        for header in ("If-None-Match", "If-Modified-Since"):
            if header.lower() in lines.lower():
                answer = next((r for r in responses if r["tcp.stream"] == q["tcp.stream"] and
                               int(r["frame.number"]) > int(q["frame.number"])), None)
                conditional.append(f"{header} in frame {md_text(q['frame.number'])} answered " +
                                   (md_text(answer['http.response.code'] + ' in frame ' + answer['frame.number'])
                                    if answer else '(no answer)'))
    md.append("- **Conditional GETs**: " + ("; ".join(conditional) if conditional else "none in this capture") +
              ". A 304 carries no body: the client's copy is still good (RFC 9110 15.4.5).")
    def pieces(r, field):
        return max((int(x) for x in r[field].split("|") if x.isdigit()), default=0)

    multi = [r for r in responses if pieces(r, "tcp.segment.count") > 1 or pieces(r, "tls.segment.count") > 1]
    md.append("- **A response spanning several segments**: " +
              ("; ".join(f"frame {md_text(r['frame.number'])}: Content-Length "
                         f"{md_text(r['http.content_length_header'])}, reassembled from "
                         + (f"{pieces(r, 'tls.segment.count')} TLS records" if pieces(r, "tls.segment.count") > 1 else "")
                         + (" and " if pieces(r, "tls.segment.count") > 1 and pieces(r, "tcp.segment.count") > 1 else "")
                         + (f"{pieces(r, 'tcp.segment.count')} TCP segments" if pieces(r, "tcp.segment.count") > 1 else "")
                         for r in multi) if multi else "none (every response fitted one segment)") + ".\n")
    return "\n".join(md)


POP3_HEADING = "### Q: The same message by HTTPS GET and by POP3 RETR: commands, bytes, what an eavesdropper sees\n"


def pop3_question(cap, http):
    """The mail client's way to message 1 (POP3 RETR, over implicit TLS and after STLS) beside the
    browser's (HTTPS GET), from the same one read of the file; "" for a capture without POP3."""
    pop = cap.pop3_lines()
    if not pop:
        return ""
    md = [POP3_HEADING]
    rows = []
    get = next((m for m in http if m["method"] == "GET" and m["uri"].split("?")[0].endswith("/messages/1")), None)
    if get:
        answer = next((m for m in http if m["stream"] == get["stream"] and not m["method"] and m["frame"] > get["frame"]),
                      None)
        rows.append(["HTTPS GET", get["stream"], f"GET {get['uri']} → {answer['status'] if answer else '-'}",
                     cap.stream_bytes(get["stream"]), "TLS records only (the request, its URI and the Basic "
                     "credentials are inside them)"])
    table = cap.table()
    for stream in sorted({p["stream"] for p in pop}):
        lines = [p for p in pop if p["stream"] == stream]
        clear = [p for p in lines if p["clear"]]
        # the password stays out of the report's table (its session ladder shows the line)
        commands = ["PASS …" if p["text"].upper().startswith("PASS ") else p["text"] for p in lines if p["dir"] == "C"]
        records = sum(len([t for t in r["tls.record.content_type"].split("|") if t]) for r in table
                      if r["tcp.stream"] == str(stream))
        kind = "POP3 with STLS" if clear else "POP3S (implicit TLS)"
        shown = "; ".join(p["dir"] + ": " + (p["text"][:40] + "…" if len(p["text"]) > 40 else p["text"]) for p in clear)
        seen = (f"in clear: {shown} "
                f"({frames([p['frame'] for p in clear])}); then {records} TLS records" if clear else
                f"nothing but {records} TLS records: not even that it is POP3 (the port says so)")
        rows.append([kind, stream, ", ".join(commands), cap.stream_bytes(stream), seen])
    md.append("Bob's message 1 fetched three ways: by the browser's way (one HTTPS GET of its URI) and by a mail "
              "client's (POP3: USER, PASS, STAT, RETR 1, QUIT; RFC 1939), over implicit TLS on its own port "
              "(RFC 8314) and on the plaintext port after STLS (RFC 2595). Bytes: the TCP payload of the whole "
              "connection, both ways, TLS handshake included.\n")
    md.append(md_table(["how", "conn", "commands", "bytes on the wire", "what an eavesdropper sees"], rows))
    md.append("With STLS the capabilities and the upgrade itself (CAPA, STLS, +OK) cross the wire in clear: an "
              "attacker on the path can delete STLS from the list and keep the client in plaintext unless the "
              "client insists on TLS (RFC 2595 2.2, RFC 8314 3); the credentials go only after the upgrade. With "
              "implicit TLS the first byte is a TLS record.\n")
    return "\n".join(md)


def eavesdropper(cap):
    """What someone on the wire, without the key log, can read."""
    blind = cap.without_secrets()
    try:
        smtp = blind.smtp_lines()
        http = blind.http_messages()
    finally:
        os.unlink(blind.path)  # the copy without the secrets, in the temporary folder
    credentials = [explain_auth(s["text"]) for s in smtp if s["text"].upper().startswith("AUTH ")]
    # The registration reply carries the new password itself: a leaked secret too.
    credentials += [Md(f"new password in the 235 reply: {md_code(s['text'].split('password: ')[1].split()[0])}")
                    for s in smtp if s["dir"] == "S" and s["text"].startswith("235") and "password: " in s["text"]]
    credentials += sorted({explain_auth(m["authorization"]) for m in http if m["authorization"]})
    return len(smtp), len(http), credentials


def analyse(job):
    """One capture's section and its row of the side-by-side table (run in a worker process: the
    captures are independent, and tshark is the time). The row (and the eavesdropper's read of a
    copy without the secrets behind it) only when there is a side-by-side: two captures or more.
    cache: the folder where `python3 -m captures.facts --cache` left its read of the same file."""
    path, out_dir, max_ladders, compare, cache, for_grading, shown = job
    cap = Capture.load(path, cache) if cache else Capture(path)
    row = None
    if compare:
        t = cap.totals()
        smtp_seen, http_seen, credentials = eavesdropper(cap)
        row = [MODE_TITLES.get(cap.mode, cap.mode), t["packets"], t["bytes"], t["connections"],
               len(cap.handshakes()) if cap.has_tls else 0, smtp_seen, http_seen,
               Md("; ".join(credentials)) if credentials else "nothing"]
    text = section(cap, out_dir, max_ladders, for_grading, shown)
    from report import labs
    answers = labs.answers(cap)
    story = None
    if scenarios is not None:
        try:
            story = scenarios.scenario_section(path, cap.capinfos)  # the comment read once, not again
        except Exception as e:  # noqa: BLE001 (another helper's module: its failure is said, not fatal)
            story = f"<p>The scenario's explanation failed: {html.escape(printable(e))}</p>"
    print(f"  analysed {printable(shown or os.path.basename(path))} ({printable(cap.mode)})", flush=True)
    return cap.mode, shown or os.path.basename(path), text, row, answers, story


def lab_questions(results):
    """The Kurose & Ross labs, question by question (report/questions.csv): the TLS lab answered from
    the first capture that answers it (implicit TLS first), the HTTP lab likewise; a linked table of
    the questions first, then one heading per question, its id the table's anchor."""
    from report import labs
    rows = labs.questions()
    md = ["## The Kurose & Ross labs, question by question {#lab-questions}\n"]
    sources = {}
    for lab in ("TLS", "HTTP"):
        wanted = [q["anchor"] for q in rows if q["lab"] == lab]
        sources[lab] = next(((name, answers) for _, name, _, _, answers, _ in results
                             if any(a in answers for a in wanted)), (None, {}))
    md.append("The questions of the Wireshark labs (v8.1) for TLS and for HTTP, in our words, each answered from "
              "the capture with the frames to open in Wireshark. " +
              " ".join(f"The {lab} lab from {md_code(name)}." for lab, (name, _) in sources.items() if name) + "\n")
    md.append(md_table(["lab", "question", "answered in"],
                       [[q["lab"], Md(f"Q{q['number']}: " + md_text(q["question"])),
                         Md(f"[{q['lab']} Q{q['number']}](#{q['anchor']})")] for q in rows]))
    for lab in ("TLS", "HTTP"):
        name, answers = sources[lab]
        md.append(f"### The {lab} lab {{#{lab.lower()}-lab}}\n")
        if not name:
            md.append("Not answerable from " + ("these captures: none holds a TLS handshake (capture one with "
                                                "`make capture`, whose implicit and STARTTLS files do)."
                                                if lab == "TLS" else "these captures: no HTTP is readable in them."))
        for q in (q for q in rows if q["lab"] == lab):
            md.append(f"#### {lab} Q{q['number']}: {md_text(q['question'])} {{#{q['anchor']}}}\n")
            md.append((answers.get(q["anchor"]) or "Not in this capture.") + "\n")
    return "\n".join(md)


def scenario_stories(results):
    """The scenario captures' explanations (report/scenarios.py), as HTML blocks."""
    stories = [(name, story) for _, name, _, _, _, story in results if story]
    if not stories:
        return ""
    md = ["## What went wrong {#what-went-wrong}\n"]
    for name, story in stories:
        md.append(f"From {md_code(name)}:\n\n<div class=\"scenario\">\n\n{story}\n\n</div>\n")
    return "\n".join(md)


def comparison(rows):
    md = ["## Q: Plaintext, STARTTLS, implicit TLS: what does an eavesdropper see?\n",
          "The same scripted session (register two users, send one message, read it back) in each mode. "
          "The last three columns are what someone capturing the traffic, without the key log, can read.\n",
          md_table(["mode", "frames", "bytes", "TCP connections", "TLS handshakes", "SMTP lines readable",
                    "HTTP messages readable", "credentials readable"], rows)]
    return "\n".join(md)


# The report's page: wide enough for every column at 1280 px, tables that scroll inside their own box
# rather than under the text, and the figures no wider than the page.
# The page runs nothing and fetches nothing but its own images (the ladders' PNGs beside it): whatever
# a capture holds, a browser shows it as text (issue 18 #5).
CONTENT_SECURITY_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; base-uri 'none'; "
                           "form-action 'none'")
PAGE_STYLE = f"""<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<style>
body {{ max-width: 1240px; margin: 0 auto; padding: 12px; font-size: 15px; }}
a, a:visited, nav#TOC a, nav#TOC a:not(:hover) {{ color: #0645ad; text-decoration: underline; }}
nav#TOC {{ border: 1px solid #ccc; padding: 4px 12px; margin-bottom: 16px; }}
nav#TOC ul {{ padding-left: 1.4em; }}
table {{ width: 100%; border-collapse: collapse; font-size: 12px; }}
/* A word or a number breaks only when it cannot fit its column alone (break-word leaves the
   columns' minimum widths alone; "anywhere" let one long cell squeeze the others to a letter). */
td, th {{ border: 1px solid #ccc; padding: 2px 5px; vertical-align: top; overflow-wrap: break-word; }}
th {{ hyphens: none; }}
/* Credentials and other base64 may break anywhere: their column gives way, never the others. */
code.credential {{ word-break: break-all; }}
/* A NUL byte of decoded credentials: a marked box, never mistaken for text or an octal escape. */
code.nul {{ background: #fde8e8; color: #a00000; border: 1px solid #d88; border-radius: 3px; padding: 0 2px;
           margin: 0 1px; font-weight: bold; }}
img {{ max-width: 100%; }}
pre {{ max-width: 100%; overflow-x: auto; font-size: 12px; }}
</style>
"""

class ActiveContent(html.parser.HTMLParser):
    """What in a page could run or fetch something: a script, a frame, an event handler, a URL with a
    scheme (javascript:, http:). The report's own page has none; one that has is not written."""
    TAGS = {"script", "iframe", "frame", "object", "embed", "form", "base", "link", "svg", "math", "audio", "video"}

    def __init__(self):
        super().__init__()
        self.found = []

    def handle_starttag(self, tag, attrs):
        if tag in self.TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in ("srcset", "formaction"):
                self.found.append(f"<{tag} {name}>")
            elif name in ("href", "src", "action", "data") and re.match(r"\s*[A-Za-z][A-Za-z0-9+.-]*:", value or ""):
                self.found.append(f"<{tag} {name}={value[:40]}>")


def active_content(page):
    finder = ActiveContent()
    finder.feed(page)
    finder.close()
    return finder.found


def main():
    try:
        return run()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None)
        detail = detail.decode(errors="replace") if isinstance(detail, bytes) else detail
        print(f"report: {printable(e)}" + (f": {printable(detail.strip()[-500:])}" if detail else ""), file=sys.stderr)
        return 1


def run():
    import concurrent.futures
    import time
    started = time.monotonic()
    parser = argparse.ArgumentParser(prog="python3 -m report.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("captures", nargs="+")
    parser.add_argument("--name", default="lab")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--max-ladders", type=int, default=12, metavar="N",
                        help="draw the ladders of the first N connections of each capture (default 12)")
    parser.add_argument("--max-connections", type=int, default=LIMITS["connections"], metavar="N",
                        help=f"a table of TLS records for the first N connections (default {LIMITS['connections']})")
    parser.add_argument("--max-rows", type=int, default=LIMITS["rows"], metavar="N",
                        help=f"the first N rows of any other table (default {LIMITS['rows']})")
    parser.add_argument("--cache", metavar="DIR",
                        help="reuse the read of each capture that `python3 -m captures.facts --cache DIR` left there "
                             "(make grade); a capture without one there is read as usual")
    parser.add_argument("--for-grading", action="store_true",
                        help="the report of make grade: the ladders drawn as SVG only (no PNG); the answers and "
                             "tables are the same as make report's")
    parser.add_argument("--shown-as", metavar="NAME",
                        help="the name to show for the one capture given, when it is a copy of the file handed in "
                             "(make grade reads a copy with the key log beside it embedded)")
    args = parser.parse_args()
    if args.shown_as and len(args.captures) != 1:
        parser.error("--shown-as names one capture: give exactly one")
    LIMITS.update(rows=max(1, args.max_rows), connections=max(0, args.max_connections))
    out_dir = os.path.join(args.out, args.name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    print(f"report: analysing {len(args.captures)} capture(s) with tshark ...", flush=True)
    import multiprocessing
    # fork on every Python (3.14 defaults to forkserver on Linux): the workers need nothing re-imported.
    compare = len(args.captures) > 1
    jobs = [(path, out_dir, args.max_ladders, compare, args.cache, args.for_grading, args.shown_as)
            for path in args.captures]
    if not compare:  # one capture (make report FILE=..., make grade): no worker to start
        results = [analyse(jobs[0])]
    else:
        with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count() or 2,
                                                    mp_context=multiprocessing.get_context("fork")) as pool:
            results = list(pool.map(analyse, jobs))
    # The main lesson first: implicit TLS, then STARTTLS, then the plaintext comparison.
    order = {"implicit": 0, "starttls": 1, "off": 2}
    results.sort(key=lambda r: order.get(r[0], 3))
    # The page's one title is pandoc's (--metadata title): no heading of level 1 here.
    doc = ["Generated by `make report` from " + ", ".join(md_code(name) for _, name, *_ in results) + ".\n"]
    if args.for_grading:
        doc[-1] = ("Generated by `make grade` from " + ", ".join(md_code(name) for _, name, *_ in results) +
                   ". Made for grading: every question's answer and table is the one `make report` gives, and the "
                   "ladders are drawn as SVG only (no PNG copies). The student's report of a file, PNG ladders "
                   "included: `make report FILE=...`.\n")
    stories = scenario_stories(results)
    if stories:
        doc.append(stories)
    doc.append(lab_questions(results))
    if len(results) > 1:
        doc.append(comparison([row for _, _, _, row, _, _ in results]))
    for _, _, text, *_ in results:
        doc.append(text)
    md_path = os.path.join(out_dir, "report.md")
    with open(md_path, "w") as f:
        f.write("\n".join(doc))
    style = os.path.join(out_dir, "style.html")
    with open(style, "w") as f:
        f.write(PAGE_STYLE)
    print("report: writing HTML with pandoc ...", flush=True)
    # gfm without bare-URL autolinks (a URI from a capture stays text), with {#id .class} attributes
    # for the questions' anchors and the credentials' cells; the capture's text itself came escaped.
    page = os.path.join(out_dir, "report.html")
    subprocess.run(["pandoc", "--standalone", "--toc", "--toc-depth=3", "--include-in-header", style,
                    "--metadata", f"title=maillab capture report: {printable(args.name)}",
                    "-f", "gfm+attributes-autolink_bare_uris", "-t", "html5", "-o", page, md_path],
                   check=True, cwd=out_dir, capture_output=True)
    os.unlink(style)
    found = active_content(open(page, encoding="utf-8").read())
    if found:
        os.unlink(page)
        raise RuntimeError("report.html would have held active content (not written): " + ", ".join(found[:5]))
    print(f"wrote {printable(md_path)} and report.html ({len(results)} capture(s)) in "
          f"{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
