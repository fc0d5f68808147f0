"""What a capture shows, as facts: one reading of a file (analyze.Capture's one tshark pass) turned
into one record per TCP stream (a TLS session, or a plaintext connection) and a few facts about the
file itself. check (what a student runs) and grade (what the instructor runs) judge these same
facts with the same rules (captures/rubric.py); report.py decodes credentials with the same decoder.

    from captures import facts
    f = facts.read("lab.pcapng")          # never raises for a bad file: f.not_capture says why
    for s in f.sessions: s.client_random, s.server_random, s.cert_sha256, s.smtp, s.http, s.accounts

Per session (TCP stream): the stream id, client and server address:port, the service (smtp/http by
the server's port), client_random and server_random (the ClientHello's and the ServerHello's
tls.handshake.random; a HelloRetryRequest's fixed random is skipped), the chosen TLS version, the SNI,
the SHA-256 of the server certificate's DER when it could be read (TLS 1.3 sends it encrypted: only
with the secrets), whether the secrets decrypt it, its SMTP lines, its HTTP request/response pairs,
the accounts that AUTH PLAIN/LOGIN or Basic authorization name, the Subjects of the messages sent,
and whether the greeting is maillab's.

Per file: not_capture (a short reason, "" for a capture), truncated, the start time, the mode
(implicit, starttls, off), the ports, the number of embedded secrets, the key log used."""

import base64
import binascii
import dataclasses
import hashlib
import os
import re
import subprocess
import time

# The package's one door for reading a capture: check, report and grade import from here, never from
# analyze; the report's ladders and transcripts need the whole reading (Capture), the scenarios' pages
# tshark's alert names (ALERTS) and one tshark call on the same terms (tshark).
from .analyze import ALERTS, HELLO_RETRY_RANDOM, VERSIONS, Capture, name, tshark  # noqa: F401 (re-exported)


# ---- credentials: the one decoder (check, grade and report use it) --------------------------------

@dataclasses.dataclass
class Credentials:
    mechanism: str  # "PLAIN", "LOGIN" (the user part) or "Basic"
    decoded: str    # what the base64 says, NULs written \0
    account: str    # the user named, lower case ("" when none)
    raw: bytes = b""  # the decoded bytes themselves (the report marks each NUL separator)


def _b64(text):
    try:
        return base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_plain(argument):
    """AUTH PLAIN's response (RFC 4616: authzid NUL user NUL password) -> Credentials or None."""
    raw = _b64(argument)
    if raw is None:
        return None
    parts = raw.split(b"\0")
    account = parts[1].decode(errors="replace").strip().lower() if len(parts) == 3 else ""
    return Credentials("PLAIN", raw.decode(errors="replace").replace("\0", "\\0"), account, raw)


def decode_credentials(text):
    """One line: "AUTH PLAIN <b64>", "AUTH LOGIN <b64 user>" or an Authorization value "Basic <b64>"
    -> Credentials, else None (a line without credentials in it)."""
    parts = text.split()
    if len(parts) >= 3 and parts[0].upper() == "AUTH" and parts[1].upper() == "PLAIN":
        return decode_plain(parts[2])
    if len(parts) >= 3 and parts[0].upper() == "AUTH" and parts[1].upper() == "LOGIN":
        raw = _b64(parts[2])
        return Credentials("LOGIN", raw.decode(errors="replace"), raw.decode(errors="replace").strip().lower()) \
            if raw is not None else None
    if len(parts) == 2 and parts[0].lower() == "basic":
        raw = _b64(parts[1])
        if raw is None:
            return None
        decoded = raw.decode(errors="replace")
        return Credentials("Basic", decoded, decoded.split(":", 1)[0].strip().lower(), raw)
    return None


def smtp_accounts(lines):
    """The accounts an SMTP dialogue authenticates as: AUTH PLAIN or LOGIN with the credentials on
    the AUTH line or on the line after the server's 334 challenge. lines: [{"dir", "text"}] in order."""
    accounts, waiting = [], ""
    for line in lines:
        text = line["text"]
        if line["dir"] == "S":
            if not text.startswith("334"):
                waiting = ""
            continue
        if waiting:
            if waiting == "PLAIN":
                found = decode_plain(text)
            else:
                raw = _b64(text)
                found = Credentials("LOGIN", raw.decode(errors="replace"), raw.decode(errors="replace").strip().lower()) \
                    if raw is not None else None
            waiting = ""
            if found and found.account:
                accounts.append(found.account)
            continue
        parts = text.split()
        if len(parts) == 2 and parts[0].upper() == "AUTH" and parts[1].upper() in ("PLAIN", "LOGIN"):
            waiting = parts[1].upper()
            continue
        found = decode_credentials(text)
        if found and found.account:
            accounts.append(found.account)
    return accounts


# ---- text shown to people: file names and reasons -----------------------------------------------

def printable(text):
    """Text safe to print on a terminal: control characters (ESC among them) and other unprintable
    ones as \\xNN / \\uNNNN escapes; a file name's undecodable bytes arrive as surrogates, shown too."""
    text = str(text)
    if text.isprintable():  # the usual case, at C speed (a surrogate is never printable)
        return text
    out = []
    for ch in text:
        if ch.isprintable() and not 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(ch)
        elif ord(ch) < 0x100 or 0xDC80 <= ord(ch) <= 0xDCFF:
            out.append(f"\\x{ord(ch) & 0xFF:02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: one starting with = + - @ or a tab or CR gets a leading '."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# ---- the facts ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Session:
    stream: int
    client: str = ""          # "address:port" ([v6]:port)
    server: str = ""
    service: str = ""         # "smtp", "http" or "" (neither port is one the capture names)
    tls: bool = False         # a ClientHello was seen
    client_random: str = ""   # 64 lower-case hex digits, "" when not seen
    server_random: str = ""
    version: str = ""         # the version the ServerHello chose ("TLS 1.3"), "" without one
    sni: str = ""
    cert_sha256: str = ""     # SHA-256 of the server certificate's DER, "" when not readable
    decrypted: bool = False   # the secrets decrypt this TLS session
    greeting: bool = False    # the server's 220 greeting is maillab's
    maillab: str = "no"       # "yes" (maillab's greeting or its realm or mailbox URIs), "no", "unknown" (unread TLS)
    smtp: list = dataclasses.field(default_factory=list)      # {"frame", "dir": "C"/"S", "text"}
    http: list = dataclasses.field(default_factory=list)      # {"frame", "method", "uri", "authorization",
    #                                                             "account", "conditional", "status", "response_frame"}
    accounts: list = dataclasses.field(default_factory=list)  # authenticated as (AUTH, Basic), lower case
    ehlo: list = dataclasses.field(default_factory=list)      # the HELO/EHLO names
    subjects: list = dataclasses.field(default_factory=list)  # the Subjects of the messages sent
    first_frame: int = 0
    pop: list = dataclasses.field(default_factory=list)       # POP3 lines {"frame", "dir", "text", "clear"}
    #                                                             (clear: in plaintext, before STLS)


@dataclasses.dataclass
class FileFacts:
    path: str
    name: str
    not_capture: str = ""     # "" for a capture; else a short reason ("a text file", "an empty file", ...)
    truncated: bool = False   # cut short in the middle of a packet: read as far as it goes
    start: str = ""           # the first packet's time, as capinfos prints it (local time), to the second
    start_epoch: float = 0.0
    mode: str = ""            # implicit, starttls or off
    smtp_port: int = 0
    http_port: int = 0
    secrets: int = 0          # decryption secrets embedded (or injected from the key log beside it)
    keys: str = ""            # the key log beside the file that was used, if any
    readable: str = ""        # the file tshark read (a copy with the key log embedded, when one was used)
    notes: list = dataclasses.field(default_factory=list)
    sessions: list = dataclasses.field(default_factory=list)

    def to_json(self):
        return dataclasses.asdict(self)

    def session(self, stream):
        return next((s for s in self.sessions if s.stream == stream), None)

    def accounts(self):
        return sorted({a for s in self.sessions for a in s.accounts})

    def client_randoms(self):
        return sorted({s.client_random for s in self.sessions if s.client_random})


def certificate_sha256(pem_path):
    """The SHA-256 (hex) of the first certificate in a PEM file: a file fingerprint to compare with
    Session.cert_sha256."""
    text = open(pem_path, encoding="ascii", errors="replace").read()
    m = re.search(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", text, re.S)
    if not m:
        raise ValueError(f"no certificate in {pem_path}")
    return hashlib.sha256(base64.b64decode("".join(m[1].split()))).hexdigest()


def keys_beside(path):
    """The key log handed in beside a capture (NAME.keys.log, NAME.pcapng.keys.log, NAME.keys) ->
    (path or "", note). A key log that is a link out of the capture's folder is refused."""
    stem = os.path.splitext(path)[0]
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for keys in (path + ".keys.log", stem + ".keys.log", stem + ".keys"):
        if not os.path.lexists(keys):
            continue
        real = os.path.realpath(keys)
        if os.path.commonpath([folder, real]) != folder:
            return "", f"refused the key log {os.path.basename(keys)}: a link out of the folder"
        if os.path.isfile(real) and os.path.getsize(real) > 0:
            return keys, ""
    return "", ""


def _embeds_secrets(path):
    """Does a pcapng file hold a Decryption Secrets Block (type 0x0000000A)? Then the key log beside it
    is not needed (and Wireshark 4.0's editcap cannot add another)."""
    import struct
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    pos, order = 0, "<"
    while pos + 12 <= len(data):
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        block_type, length = struct.unpack(order + "II", data[pos:pos + 8])
        if block_type == 0x0000000A:
            return True
        if length < 12:
            return False
        pos += length
    return False


def _sniff(path):
    """A short reason why a file that Wireshark cannot read is not a capture."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if not head:
        return "an empty file"
    if head[:4] in (b"\x0a\x0d\x0d\x0a", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                    b"\xa1\xb2\x3c\x4d"):
        return "a damaged capture file (its first block is unreadable)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "not a capture file Wireshark can read"


def _address(row, side):
    addr = row[f"ip.{side}"] or row[f"ipv6.{side}"]
    port = row["tcp.srcport" if side == "src" else "tcp.dstport"]
    return (f"[{addr}]" if ":" in addr else addr) + f":{port}"


def _on(value):
    return value in ("1", "True")


def _first(value):
    return value.split("|")[0] if value else ""


def read(path, work=None, cache=None):
    """The facts of one file. Never raises for a bad file (the reason is in not_capture). work: a
    folder for the copy with the key log beside it embedded (editcap --inject-secrets); without it,
    a key log beside the file is not used. cache: a folder to leave the read in (Capture.save), for
    the report of the same file to reuse (make grade: `python3 -m report.report --cache`)."""
    path = os.path.abspath(path)
    f = FileFacts(path=path, name=os.path.basename(path))
    if not os.path.lexists(path):
        f.not_capture = "no such file"
        return f
    if not os.path.isfile(path):
        f.not_capture = "not a regular file"
        return f
    readable = path
    keys, note = keys_beside(path)
    if note:
        f.notes.append(note)
    if keys and work and not _embeds_secrets(path):
        target = os.path.join(work, hashlib.sha256(path.encode()).hexdigest()[:16] + ".with-keys.pcapng")
        done = subprocess.run(["editcap", "--inject-secrets", f"tls,{os.path.abspath(keys)}", "--", path, target],
                              capture_output=True, text=True)
        if done.returncode == 0:
            readable, f.keys = target, os.path.basename(keys)
            f.notes.append(f"keys from {f.keys}")
        else:
            f.notes.append(f"the key log {os.path.basename(keys)} could not be used")
    if _sniff(path) == "an empty file":
        f.not_capture = "an empty file"
        return f
    f.readable = readable
    try:
        cap = Capture(readable)
        rows = cap.table()
    except (RuntimeError, OSError, ValueError):
        f.not_capture = _sniff(path)
        return f
    if cache:
        try:
            cap.save(cache)
        except OSError:
            pass  # the report reads the file itself
    f.truncated = cap.truncated
    f.mode, f.smtp_port, f.http_port, f.secrets = cap.mode, cap.smtp_port, cap.http_port, cap.secrets
    m = re.search(r"First packet time:\s*(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", cap.capinfos)
    if m:
        f.start = m[1]
        f.start_epoch = time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S"))
    if not rows and not f.truncated and "Number of packets:   0" in cap.capinfos:
        f.notes.append("the capture holds no packets")
    f.sessions = _sessions(cap, rows)
    return f


def from_json(data):
    """A FileFacts from its to_json() (what `python3 -m captures.facts --json` prints)."""
    fields = {f.name for f in dataclasses.fields(FileFacts)}
    session_fields = {f.name for f in dataclasses.fields(Session)}
    values = {k: v for k, v in data.items() if k in fields}
    values["sessions"] = [Session(**{k: v for k, v in s.items() if k in session_fields})
                          for s in data.get("sessions", [])]
    return FileFacts(**values)


def main(argv=None):
    """python3 -m captures.facts [--work DIR] [--cache DIR] -- FILE: the facts of one file as JSON
    (report.grade reads each file this way, in a process of its own it can stop when the file's time
    is up; with --cache the tshark read is left in DIR for the file's report)."""
    import argparse
    import json
    import sys
    parser = argparse.ArgumentParser(prog="python3 -m captures.facts")
    parser.add_argument("--work", help="a folder for the copy with the key log beside the file embedded")
    parser.add_argument("--cache", help="a folder to leave the read in, for `report.report --cache` of the same file")
    parser.add_argument("file")
    args = parser.parse_args(argv)
    json.dump(read(args.file, args.work, args.cache).to_json(), sys.stdout)
    return 0


def _sessions(cap, rows):
    streams = {}
    for r in rows:
        if r["tcp.stream"].isdigit():
            streams.setdefault(int(r["tcp.stream"]), []).append(r)
    pop3_ports = {p for p in cap.pop3_ports() if p}
    server_ports = {p for p in (cap.smtp_port, cap.http_port) if p} | pop3_ports
    out = []
    for stream, frames in sorted(streams.items()):
        s = Session(stream=stream, first_frame=int(frames[0]["frame.number"]))
        syn = next((r for r in frames if _on(r["tcp.flags.syn"]) and not _on(r["tcp.flags.ack"])), None)
        hello = next((r for r in frames if "1" in r["tls.handshake.type"].split("|")), None)
        known = next((r for r in frames if int(r["tcp.srcport"] or 0) in server_ports), None)
        if syn or hello:
            opener = syn or hello
            s.client, s.server = _address(opener, "src"), _address(opener, "dst")
            server_port = opener["tcp.dstport"]
        elif known:
            s.client, s.server = _address(known, "dst"), _address(known, "src")
            server_port = known["tcp.srcport"]
        else:
            first = frames[0]
            low = min(int(first["tcp.srcport"] or 0), int(first["tcp.dstport"] or 0))
            side = "src" if int(first["tcp.srcport"] or 0) == low else "dst"
            s.server, s.client = _address(first, side), _address(first, "dst" if side == "src" else "src")
            server_port = str(low)

        def from_server(r):
            return r["tcp.srcport"] == server_port

        s.service = "smtp" if int(server_port or 0) == cap.smtp_port and cap.smtp_port else \
            "http" if int(server_port or 0) == cap.http_port and cap.http_port else \
            "pop3" if int(server_port or 0) in pop3_ports else ""
        _tls(s, frames, from_server)
        _smtp(s, frames, from_server)
        _http(s, frames, from_server)
        _pop(s, frames, from_server)
        if not s.service:
            s.service = "smtp" if s.smtp else "http" if s.http else "pop3" if s.pop else ""
        s.accounts = sorted(set(smtp_accounts(s.smtp)) | {x["account"] for x in s.http if x["account"]})
        s.greeting = any(l["dir"] == "S" and l["text"].startswith("220") and "maillab" in l["text"] for l in s.smtp)
        realm = any('realm="maillab' in r["http.www_authenticate"] for r in frames)
        mailboxes = any(x["uri"].startswith("/mailboxes/") and x["status"] in ("200", "304", "401", "403")
                        for x in s.http)
        # A POP3 greeting in clear before STLS says maillab, but not that its TLS part could be read:
        # a file without keys stays "unknown" (check then says undecryptable).
        pop_greeting = (not s.tls or s.decrypted) and any(
            l["dir"] == "S" and l["text"].startswith("+OK") and "maillab POP3" in l["text"] for l in s.pop[:1])
        if s.greeting or realm or mailboxes or pop_greeting:
            s.maillab = "yes"
        elif s.tls and not s.decrypted:
            s.maillab = "unknown"
        out.append(s)
    return out


def _tls(s, frames, from_server):
    for r in frames:
        kinds = r["tls.handshake.type"].split("|")
        randoms = [x.replace(":", "").lower() for x in r["tls.handshake.random"].split("|") if x]
        if "1" in kinds and not from_server(r):
            s.tls = True
            if randoms and not s.client_random:
                s.client_random = randoms[0]
            s.sni = s.sni or _first(r["tls.handshake.extensions_server_name"])
        if "2" in kinds and from_server(r):
            real = [x for x in randoms if x != HELLO_RETRY_RANDOM]
            if real:
                s.server_random = real[-1]
                chosen = _first(r["tls.handshake.extensions.supported_version"]) or _first(r["tls.handshake.version"])
                s.version = name(VERSIONS, chosen)
        if "11" in kinds and from_server(r) and r["tls.handshake.certificate"] and not s.cert_sha256:
            first = r["tls.handshake.certificate"].split("|")[0].split(",")[0].replace(":", "").strip()
            try:
                s.cert_sha256 = hashlib.sha256(bytes.fromhex(first)).hexdigest()
            except ValueError:
                pass
        # TLS 1.3 encrypts every handshake message after the ServerHello: tshark names them
        # (EncryptedExtensions, Certificate, CertificateVerify, Finished) only when it decrypted them.
        if from_server(r) and any(k in ("8", "11", "15", "20") for k in kinds):
            s.decrypted = True
    if s.version != "TLS 1.3":
        s.decrypted = False  # TLS 1.2 and older send these in clear: only what they carry tells
    if s.tls and any(r["smtp.command_line"] or r["smtp.response"] or r["http.request.method"] or r["http.response.code"]
                     or r["pop.request.command"] or r["pop.response.indicator"] for r in frames if "tls" in r["frame.protocols"].split(":")):
        s.decrypted = True


def _smtp(s, frames, from_server):
    for r in frames:
        if "smtp" not in r["frame.protocols"].split(":"):
            continue
        direction = "S" if from_server(r) else "C"
        text = r["smtp.command_line"] or r["smtp.response"]
        if not text and direction == "C":
            text = "<message data>"
        for part in text.split("|") if text else []:
            part = part.replace("\\r\\n", "").rstrip("\r\n")  # tshark prints the line end as \r\n
            s.smtp.append({"frame": int(r["frame.number"]), "dir": direction, "text": part})
        if r["imf.subject"]:
            s.subjects += [x for x in r["imf.subject"].split("|") if x]
    for line in s.smtp:
        words = line["text"].split(" ", 1)
        if line["dir"] == "C" and words[0].upper() in ("EHLO", "HELO") and len(words) == 2 and words[1] not in s.ehlo:
            s.ehlo.append(words[1])


def _pop(s, frames, from_server):
    """The POP3 commands and the first line of each reply (continuations, the message itself, are left
    out); clear: the line crossed the wire in plaintext (before STLS), not inside TLS."""
    for r in frames:
        protocols = r["frame.protocols"].split(":")
        if "pop" not in protocols:
            continue
        if r["pop.request.command"]:
            text = r["pop.request.command"].split("|")[0] + " " + r["pop.request.parameter"].split("|")[0]
        elif r["pop.response.indicator"]:
            text = r["pop.response.indicator"].split("|")[0] + " " + r["pop.response.description"].split("|")[0]
        else:
            continue
        s.pop.append({"frame": int(r["frame.number"]), "dir": "S" if from_server(r) else "C", "text": text.strip(),
                      "clear": "tls" not in protocols})


def _http(s, frames, from_server):
    pending = []
    for r in frames:
        if r["http.request.method"] and not from_server(r):
            authorization = _first(r["http.authorization"])
            found = decode_credentials(authorization) if authorization else None
            lines = r["http.request.line"].lower()
            exchange = {"frame": int(r["frame.number"]), "method": _first(r["http.request.method"]),
                        "uri": _first(r["http.request.uri"]), "authorization": authorization,
                        "account": found.account if found else "",
                        "conditional": "if-none-match:" in lines or "if-modified-since:" in lines,
                        "status": "", "response_frame": 0}
            s.http.append(exchange)
            pending.append(exchange)
        elif r["http.response.code"] and from_server(r):
            asked = _first(r["http.request_in"])
            match = next((x for x in pending if str(x["frame"]) == asked), None) or (pending[0] if pending else None)
            if match:
                pending.remove(match)
                match["status"], match["response_frame"] = _first(r["http.response.code"]), int(r["frame.number"])


if __name__ == "__main__":
    import sys
    sys.exit(main())
