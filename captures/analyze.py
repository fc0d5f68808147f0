"""Reads a maillab capture with tshark: which ports carry SMTP and HTTP, in which TLS mode, whether it
holds decryption secrets, and the rows that check.py and report.py use (TLS handshakes and records,
SMTP commands and replies, HTTP requests and responses). tshark does the dissecting; this module only
asks for fields and arranges them. It lives with the captures; report/ builds on it.

tshark's start-up (about half a second) is most of its time on a lab capture, so every field any
question needs is read in one pass per file (Capture.table) and the questions' display filters are
answered from that table in Python (ROW_FILTERS); a filter not listed there still runs tshark."""

import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile

CIPHER_SUITES = {"0x1301": "TLS_AES_128_GCM_SHA256", "0x1302": "TLS_AES_256_GCM_SHA384",
                 "0x1303": "TLS_CHACHA20_POLY1305_SHA256", "0x1304": "TLS_AES_128_CCM_SHA256",
                 "0x1305": "TLS_AES_128_CCM_8_SHA256", "0x00ff": "TLS_EMPTY_RENEGOTIATION_INFO_SCSV",
                 "0xc02b": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "0xc02c": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                 "0xc02f": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "0xc030": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                 # TLS 1.2 suites a general-purpose client (Python's ssl, a browser) also offers (IANA registry)
                 "0xcca8": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                 "0xcca9": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                 "0xccaa": "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "0x009e": "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
                 "0x009f": "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "0xc023": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
                 "0xc024": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384", "0xc027": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
                 "0xc028": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "0x0067": "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
                 "0x006b": "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256", "0xc009": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
                 "0xc00a": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "0xc013": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
                 "0xc014": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "0x0033": "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
                 "0x0039": "TLS_DHE_RSA_WITH_AES_256_CBC_SHA", "0x009c": "TLS_RSA_WITH_AES_128_GCM_SHA256",
                 "0x009d": "TLS_RSA_WITH_AES_256_GCM_SHA384", "0x003c": "TLS_RSA_WITH_AES_128_CBC_SHA256",
                 "0x003d": "TLS_RSA_WITH_AES_256_CBC_SHA256", "0x002f": "TLS_RSA_WITH_AES_128_CBC_SHA",
                 "0x0035": "TLS_RSA_WITH_AES_256_CBC_SHA"}
GROUPS = {"29": "x25519", "23": "secp256r1", "24": "secp384r1", "25": "secp521r1", "30": "x448", "256": "ffdhe2048",
          "257": "ffdhe3072", "258": "ffdhe4096", "259": "ffdhe6144", "260": "ffdhe8192"}
VERSIONS = {"0x0301": "TLS 1.0", "0x0302": "TLS 1.1", "0x0303": "TLS 1.2", "0x0304": "TLS 1.3"}
CONTENT_TYPES = {"20": "change_cipher_spec", "21": "alert", "22": "handshake", "23": "application_data"}
ALERTS = {"0": "close_notify", "10": "unexpected_message", "20": "bad_record_mac", "40": "handshake_failure",
          "42": "bad_certificate", "45": "certificate_expired", "46": "certificate_unknown", "47": "illegal_parameter",
          "48": "unknown_ca", "50": "decode_error", "51": "decrypt_error", "70": "protocol_version",
          "80": "internal_error", "90": "user_canceled", "109": "missing_extension", "112": "unrecognized_name",
          "116": "certificate_required", "120": "no_application_protocol"}
# RFC 8446 4.1.3: a HelloRetryRequest is a ServerHello whose random is this fixed value.
HELLO_RETRY_RANDOM = "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
HANDSHAKE_TYPES = {"1": "ClientHello", "2": "ServerHello", "4": "NewSessionTicket", "8": "EncryptedExtensions",
                   "11": "Certificate", "13": "CertificateRequest", "15": "CertificateVerify", "20": "Finished",
                   "24": "KeyUpdate"}


def name(table, value):
    if table is GROUPS and value.startswith("0x"):
        value = str(int(value, 16))  # some tshark versions print the named groups in hex
    return table.get(value, value)


def tshark(path, args, check=True):
    out = subprocess.run(["tshark", "-r", path] + args, capture_output=True, text=True, errors="replace")
    # A file cut short (a capture stopped hard, a partial download) is read as far as it goes.
    if check and out.returncode != 0 and "cut short" not in out.stderr:
        raise RuntimeError(f"tshark failed on {path}: {out.stderr.strip()}")
    return out.stdout


def certificate_names(certificates):
    """What the lab asks of the certificates the server sent (the first is the server's own), read
    from their bytes (tshark's tls.handshake.certificate field) by one `openssl x509 -text` each: the
    same on every tshark version, where tshark's verbose text is not. For the first: subject, issuer,
    dates, subjectAltName, key ("EC prime256v1 (256 bit)"), the key's own bytes (pub_hex, pub_bytes)
    and the issuer's signature algorithm; "chain": [(subject, issuer)] of every certificate sent.
    Empty when the certificates are not readable (TLS 1.3 without keys)."""
    ders = []
    for text in re.split(r"[|,]", certificates):  # the certificates of one message (one frame)
        try:
            ders.append(bytes.fromhex(text.replace(":", "").strip()))
        except ValueError:
            pass
    ders = [d for d in ders if d]
    if not ders:
        return {}
    names = {"chain": []}
    for index, der in enumerate(ders[:4]):
        shown = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-text", "-nameopt", "RFC2253"],
                               input=der, capture_output=True).stdout.decode(errors="replace")
        one = _certificate_text(shown)
        names["chain"].append((one.get("subject", "?"), one.get("issuer", "?")))
        if index == 0:
            names.update(one)
            names["der_bytes"] = len(der)
    return names


def _certificate_text(text):
    """The fields of `openssl x509 -text -nameopt RFC2253` that the lab asks about."""
    names, lines = {}, text.splitlines()
    pub, in_pub = [], False
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(": ")
        if in_pub:
            if re.fullmatch(r"[0-9a-f:]+", line.strip()):
                pub.append(line.strip())
                continue
            in_pub = False
        if key in ("Subject", "Issuer"):
            names[key.lower()] = value.strip()
        elif key == "Not Before":
            names["not_before"] = value.strip()
        elif key.startswith("Not After"):
            names["not_after"] = line.split(":", 1)[1].strip()
        elif key == "Signature Algorithm" and "signature_algorithm" not in names:
            names["signature_algorithm"] = value.strip()
        elif key == "Public Key Algorithm":
            names["key_algorithm"] = value.strip()
        elif "Public-Key:" in line:
            names["key_bits"] = line.split("Public-Key:", 1)[1].strip()
        elif line.strip() in ("pub:", "Modulus:"):
            in_pub = True
        elif key == "ASN1 OID":
            names["curve"] = value.strip()
        elif "Subject Alternative Name" in line and i + 1 < len(lines):
            names["san"] = lines[i + 1].strip()
    if pub:
        names["pub_hex"] = "".join(pub).replace(":", "")
        names["pub_bytes"] = len(names["pub_hex"]) // 2
    if "key_bits" in names:
        names["key"] = ("EC " + names["curve"] + " " if "curve" in names else "") + names["key_bits"]
    return names


# The fields of the one pass. The free-text ones (message data, IMF) come last: if tshark's output
# of a frame is broken by a line break inside them, the fields before them are still whole.
TABLE_FIELDS = [
    "frame.number", "frame.time_relative", "frame.protocols", "tcp.stream", "tcp.srcport", "tcp.dstport",
    "ip.src", "ipv6.src", "ip.dst", "ipv6.dst",
    "tcp.flags.syn", "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset", "tcp.segment.count", "tcp.len",
    "tls.record.version", "tls.record.content_type", "tls.record.opaque_type", "tls.record.length",
    "tls.handshake.type", "tls.handshake.version", "tls.handshake.extensions.supported_version",
    "tls.handshake.extensions_key_share_group", "tls.handshake.ciphersuite", "tls.handshake.extensions_server_name",
    "tls.handshake.random", "tls.handshake.extensions_supported_group", "tls.handshake.sig_hash_alg",
    "tls.handshake.extensions_alpn_str", "tls.alert_message.desc", "tls.segment.count",
    "smtp.command_line", "smtp.response", "smtp.response.code", "smtp.req.command",
    "http.request.method", "http.request.uri", "http.request.line", "http.response.code", "http.response.phrase",
    "http.content_type", "http.content_length_header", "http.last_modified", "http.authorization",
    "http.request_in", "http.www_authenticate", "http.server", "http.request.version", "http.response.version",
    "http.accept_language", "http.response.line",
    "pop.request.command", "pop.request.parameter", "pop.response.indicator", "pop.response.description",
    "imf.subject",
    "tls.handshake.certificate", "smtp.data.fragment", "imf",
]


def _on(value):
    return value in ("1", "True")  # tshark 4.0 prints booleans as 1, 4.2 and later as True


def _has_type(row, kind):
    return kind in row["tls.handshake.type"].split("|")


# The display filters the questions use, as tests on a row of the table (same meaning as in tshark).
ROW_FILTERS = {
    "tls": lambda r: "tls" in r["frame.protocols"].split(":"),
    "smtp": lambda r: "smtp" in r["frame.protocols"].split(":"),
    "pop": lambda r: "pop" in r["frame.protocols"].split(":"),
    "http.request": lambda r: bool(r["http.request.method"]),
    "http.response": lambda r: bool(r["http.response.code"]),
    "http.request || http.response": lambda r: bool(r["http.request.method"] or r["http.response.code"]),
    "tls.handshake.type == 1": lambda r: _has_type(r, "1"),
    "tls.handshake.type == 11": lambda r: _has_type(r, "11"),
    "tls.handshake.type == 1 || tls.handshake.type == 2": lambda r: _has_type(r, "1") or _has_type(r, "2"),
    "tcp.flags.syn == 1 || tcp.flags.fin == 1 || tcp.flags.reset == 1":
        lambda r: _on(r["tcp.flags.syn"]) or _on(r["tcp.flags.fin"]) or _on(r["tcp.flags.reset"]),
    "tcp.flags.syn == 1 && tcp.flags.ack == 0": lambda r: _on(r["tcp.flags.syn"]) and not _on(r["tcp.flags.ack"]),
}


class Capture:
    def __init__(self, path):
        self.path = path
        # -M: exact numbers (totals() reads them too); one capinfos run per file. "--": a file name
        # that starts with "-" is a file name.
        info = subprocess.run(["capinfos", "-M", "--", path], capture_output=True, text=True)
        self.capinfos = info.stdout
        self.truncated = "cut short" in info.stderr
        if info.returncode != 0 and not self.truncated:
            raise RuntimeError(f"not a capture file: {path}: {info.stderr.strip()}")
        self.commented = "maillab mode=" in info.stdout
        self.secrets = int((re.search(r"Number of decryption secrets in file:\s*(\d+)", info.stdout) or [0, 0])[1])
        comment = re.search(r"maillab mode=(\w+) smtp=(\d+) http=(\d+)", info.stdout)
        if comment and comment[1] == "guess":  # a live capture of the student's own servers
            self.mode, self.smtp_port, self.http_port = self._guess([int(comment[2]), int(comment[3])])
        elif comment:
            self.mode, self.smtp_port, self.http_port = comment[1], int(comment[2]), int(comment[3])
        else:
            self.mode, self.smtp_port, self.http_port = self._guess()
        self.has_tls = bool(self.fields("tls.handshake.type == 1", ["frame.number"]))

    def _guess(self, known_ports=None):
        """A student's capture without our comment (or one that names only the ports): the servers'
        ports are the SYNs' destinations; the one whose first server bytes in clear are "220 " speaks
        SMTP (plaintext, or STARTTLS when the client sends STARTTLS); a port whose client opens with a
        TLS handshake record is TLS, and among those the one whose decrypted server says "220 " first
        is SMTP over implicit TLS. Read from the TCP payloads of one tshark pass (and one more for the
        decrypted banner when there is TLS), never one run per port: a capture of SYNs to thousands of
        ports costs what any capture of its size costs (issue 18 #6)."""
        out = tshark(self.path, ["-o", "tcp.desegment_tcp_streams:FALSE",
                                 "-Y", "(tcp.flags.syn == 1 && tcp.flags.ack == 0) || tcp.len > 0",
                                 "-T", "fields", "-E", "separator=\t", "-e", "tcp.stream", "-e", "tcp.srcport",
                                 "-e", "tcp.dstport", "-e", "tcp.flags.syn", "-e", "tcp.flags.ack", "-e", "tcp.payload"])
        server_of, first_server, client_data = {}, {}, {}
        for line in out.splitlines():
            values = line.split("\t")
            if len(values) < 6 or not values[0].isdigit():
                continue
            stream, src, dst, syn, ack, payload = values[:6]
            if _on(syn) and not _on(ack):
                server_of.setdefault(stream, (int(dst or 0), src))
                continue
            known = server_of.get(stream)
            if not known or not payload:
                continue
            try:
                data = bytes.fromhex(payload.split(",")[0].replace(":", "")[:512])
            except ValueError:
                continue
            if src == known[1]:  # from the client (its port)
                seen = client_data.setdefault(stream, [])
                if len(seen) < 8:
                    seen.append(data)
            else:
                first_server.setdefault(stream, data)
        ports = sorted({port for port, _ in server_of.values()})
        if known_ports:
            ports = [p for p in ports if p in known_ports] or sorted(p for p in known_ports if p)
        wanted = set(ports)
        plain_smtp, starttls, tls_ports, http_ports = set(), set(), set(), set()
        for stream, (port, _) in server_of.items():
            if port not in wanted:
                continue
            sent = client_data.get(stream, [])
            if first_server.get(stream, b"")[:4] in (b"220 ", b"220-"):
                plain_smtp.add(port)
                if any(re.search(rb"(?im)^STARTTLS\s*$", d) for d in sent):
                    starttls.add(port)
            if sent and sent[0][:1] == b"\x16" and sent[0][1:2] == b"\x03":
                tls_ports.add(port)
            if sent and re.match(rb"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) ", sent[0]):
                http_ports.add(port)
        smtp, mode = 0, "implicit"
        if plain_smtp:
            smtp = min(plain_smtp)
            mode = "starttls" if smtp in starttls else "off"
        elif tls_ports:
            # Implicit TLS: tell SMTP from HTTP by what the decrypted server says first (one run).
            args = []
            for port in sorted(tls_ports):
                args += ["-d", f"tcp.port=={port},tls", "-d", f"tls.port=={port},smtp"]
            banner = tshark(self.path, args + ["-Y", "smtp.response.code == 220", "-T", "fields", "-e", "tcp.srcport"])
            found = sorted({int(p) for p in banner.split() if p.isdigit() and int(p) in tls_ports})
            smtp = found[0] if found else 0
        others = [p for p in ports if p != smtp]
        likely = [p for p in others if p in http_ports or p in tls_ports]
        http = (likely or others or [0])[0]
        return mode, smtp, http

    def decode_args(self):
        """tshark Decode As options: the lab's ports are not the well-known ones."""
        args = []
        if self.smtp_port:
            if self.mode == "implicit":
                args += ["-d", f"tcp.port=={self.smtp_port},tls", "-d", f"tls.port=={self.smtp_port},smtp"]
            else:
                args += ["-d", f"tcp.port=={self.smtp_port},smtp"]
        if self.http_port:
            if self.mode == "off":
                args += ["-d", f"tcp.port=={self.http_port},http"]
            else:
                args += ["-d", f"tcp.port=={self.http_port},tls", "-d", f"tls.port=={self.http_port},http"]
        return args

    def table(self):
        """Every frame with every field of TABLE_FIELDS: the file's one tshark pass."""
        if "_table" not in self.__dict__:
            self._table = self._fields("frame", TABLE_FIELDS)
        return self._table

    def fields(self, display_filter, fields, extra=()):
        """The rows tshark -Y display_filter -e fields... would print, from the one pass when it can."""
        test = ROW_FILTERS.get(display_filter)
        if test and not extra and all(f in TABLE_FIELDS for f in fields):
            return [{f: row[f] for f in fields} for row in self.table() if test(row)]
        key = (display_filter, tuple(fields), tuple(extra))
        cache = self.__dict__.setdefault("_fields_cache", {})
        if key not in cache:
            cache[key] = self._fields(display_filter, fields, extra)
        return [dict(row) for row in cache[key]]

    def _fields(self, display_filter, fields, extra=()):
        args = self.decode_args() + list(extra) + ["-Y", display_filter, "-T", "fields", "-E", "occurrence=a",
                                                    "-E", "aggregator=|", "-E", "separator=\t"]
        for f in fields:
            args += ["-e", f]
        rows = []
        for line in tshark(self.path, args).splitlines():
            values = line.split("\t")
            if not values[0].isdigit() and fields[0] in ("frame.number", "tcp.stream"):
                continue  # binary data shown as text broke the line; nothing readable in it
            rows.append(dict(zip(fields, values + [""] * (len(fields) - len(values)))))
        return rows

    def pop3_ports(self):
        """The POP3 ports the comment names after the others (capture.py's `pop3=N pop3-plain=K`):
        (implicit TLS, plaintext with STLS), 0 for one not named. Read from capinfos, so a cached
        read knows them too."""
        found = re.search(r"maillab mode=\w+ smtp=\d+ http=\d+ pop3=(\d+)(?: pop3-plain=(\d+))?", self.capinfos)
        return (int(found[1]), int(found[2] or 0)) if found else (0, 0)

    def direction(self, row):
        """'C' for client to server, 'S' for server to client."""
        servers = (self.smtp_port, self.http_port) + tuple(p for p in self.pop3_ports() if p)
        return "S" if int(row["tcp.srcport"] or 0) in servers else "C"

    def pop3_lines(self):
        """The POP3 dialogue as tshark decodes it: {"frame", "stream", "dir", "text", "clear"}, clear
        when the line went on the wire in plaintext (before STLS), not inside TLS."""
        out = []
        for r in self.fields("pop", ["frame.number", "tcp.stream", "tcp.srcport", "frame.protocols",
                                     "pop.request.command", "pop.request.parameter", "pop.response.indicator",
                                     "pop.response.description"]):
            if r["pop.request.command"]:
                text = (r["pop.request.command"].split("|")[0] + " " + r["pop.request.parameter"].split("|")[0]).strip()
            elif r["pop.response.indicator"]:
                text = (r["pop.response.indicator"].split("|")[0] + " " +
                        r["pop.response.description"].split("|")[0]).strip()
            else:
                continue  # a continuation (message data, a multi-line list)
            out.append({"frame": int(r["frame.number"]), "stream": int(r["tcp.stream"]), "dir": self.direction(r),
                        "text": text, "clear": "tls" not in r["frame.protocols"].split(":")})
        return out

    def stream_bytes(self, stream):
        """TCP payload bytes of one connection, both ways (what went on the wire above TCP)."""
        return sum(int(r["tcp.len"] or 0) for r in self.table() if r["tcp.stream"] == str(stream))

    def smtp_lines(self):
        rows = self.fields("smtp", ["frame.number", "tcp.stream", "tcp.srcport", "smtp.command_line", "smtp.response",
                                    "smtp.data.fragment", "imf"])
        out = []
        for r in rows:
            text = r["smtp.command_line"] or r["smtp.response"]
            if not text and self.direction(r) == "C":
                text = "<message data>"
            for part in text.split("|") if text else []:
                # tshark prints the line ending as the four characters \r\n
                part = part.replace("\\r\\n", "").rstrip("\r\n")
                out.append({"frame": int(r["frame.number"]), "stream": int(r["tcp.stream"]),
                            "dir": self.direction(r), "text": part})
        return out

    def http_messages(self):
        rows = self.fields("http.request || http.response", ["frame.number", "tcp.stream", "tcp.srcport",
                                                            "http.request.method", "http.request.uri",
                                                            "http.response.code", "http.response.phrase",
                                                            "http.content_type", "http.content_length_header",
                                                            "http.authorization"])
        return [{"frame": int(r["frame.number"]), "stream": int(r["tcp.stream"]), "dir": self.direction(r),
                 "method": r["http.request.method"], "uri": r["http.request.uri"], "status": r["http.response.code"],
                 "phrase": r["http.response.phrase"], "type": r["http.content_type"],
                 "length": r["http.content_length_header"], "authorization": r["http.authorization"]} for r in rows]

    def tls_records(self):
        rows = self.fields("tls", ["frame.number", "frame.time_relative", "tcp.stream", "tcp.srcport", "tcp.dstport",
                                   "tls.record.version", "tls.record.content_type", "tls.record.opaque_type",
                                   "tls.record.length", "tls.handshake.type", "tls.handshake.version",
                                   "tls.handshake.extensions.supported_version", "tls.handshake.extensions_key_share_group",
                                   "tls.handshake.ciphersuite", "tls.alert_message.desc"])
        records = []
        for r in rows:
            types = r["tls.record.content_type"].split("|")
            lengths = r["tls.record.length"].split("|")
            versions = r["tls.record.version"].split("|")
            # TLS 1.3 (RFC 8446 5.2): an encrypted record says application_data (23) on the wire; its
            # real type is inside, readable only with the keys. tshark gives the outer type as
            # opaque_type for the records it decrypted, which are the frame's last ones (plaintext
            # ClientHello, ServerHello and change_cipher_spec come before encryption starts).
            opaque = [t for t in r["tls.record.opaque_type"].split("|") if t]
            first_encrypted = len(types) - len(opaque)
            frame_records = []
            # What a decrypted application_data record carries: the protocol of the connection's port.
            ports = {int(r["tcp.srcport"] or 0), int(r["tcp.dstport"] or 0)}
            carried = "SMTP" if self.smtp_port in ports else "HTTP" if self.http_port in ports else ""
            for i, ctype in enumerate(types):
                wire = opaque[i - first_encrypted] if i >= first_encrypted else ctype
                frame_records.append({"frame": int(r["frame.number"]), "time": float(r["frame.time_relative"] or 0),
                                      "stream": int(r["tcp.stream"]), "dir": self.direction(r),
                                      "record_version": name(VERSIONS, versions[i] if i < len(versions) else ""),
                                      "wire_type": name(CONTENT_TYPES, wire),
                                      "type": name(CONTENT_TYPES, ctype),
                                      "encrypted": i >= first_encrypted or ctype == "23",
                                      "decrypted": i >= first_encrypted,
                                      "carries": carried if ctype == "23" and i >= first_encrypted else "",
                                      "length": lengths[i] if i < len(lengths) else ""})
            # Handshake messages in order, one per handshake record (TLS 1.3 sends each encrypted
            # handshake message in its own record here); any extra ones go with the last.
            messages = [name(HANDSHAKE_TYPES, t) for t in r["tls.handshake.type"].split("|") if t]
            carriers = [rec for rec in frame_records if rec["type"] == "handshake"] or frame_records[-1:]
            for i, message in enumerate(messages):
                carriers[min(i, len(carriers) - 1)].setdefault("handshake", []).append(message)
            if frame_records and r["tls.alert_message.desc"]:
                desc = r["tls.alert_message.desc"].split("|")[0]
                frame_records[-1]["alert"] = f"{ALERTS.get(desc, 'alert')} ({desc})"
            records += frame_records
        return records

    def handshakes(self):
        """One row per TLS connection: what the ClientHello offered and the ServerHello chose."""
        if "_handshakes" not in self.__dict__:
            self._handshakes = self._read_handshakes()
        return [dict(h) for h in self._handshakes]

    def _read_handshakes(self):
        hellos = self.fields("tls.handshake.type == 1 || tls.handshake.type == 2",
                             ["tcp.stream", "tcp.srcport", "tcp.dstport", "tls.record.version", "tls.handshake.type",
                              "tls.handshake.version", "tls.handshake.extensions.supported_version",
                              "tls.handshake.extensions_key_share_group", "tls.handshake.ciphersuite",
                              "tls.handshake.extensions_server_name", "tls.handshake.random",
                              "tls.handshake.extensions_supported_group", "tls.handshake.sig_hash_alg",
                              "tls.handshake.extensions_alpn_str", "frame.number"])
        table = {}
        for r in hellos:
            stream = int(r["tcp.stream"])
            row = table.setdefault(stream, {"stream": stream})
            kinds = r["tls.handshake.type"].split("|")
            if "1" in kinds:
                row["server_port"] = int(r["tcp.dstport"])
                row["client_record_version"] = name(VERSIONS, r["tls.record.version"].split("|")[0])
                row["client_hello_version"] = name(VERSIONS, r["tls.handshake.version"].split("|")[0])
                row["offered_versions"] = [name(VERSIONS, v) for v in r["tls.handshake.extensions.supported_version"].split("|") if v]
                row["offered_suites"] = [name(CIPHER_SUITES, c) for c in r["tls.handshake.ciphersuite"].split("|") if c]
                row["offered_groups"] = [name(GROUPS, g) for g in r["tls.handshake.extensions_key_share_group"].split("|") if g]
                row["client_hello_frame"] = int(r["frame.number"])
                row["sni"] = r["tls.handshake.extensions_server_name"] or "(none)"
                row["client_random"] = r["tls.handshake.random"].split("|")[0].replace(":", "")
                row["supported_groups"] = [name(GROUPS, g) for g in r["tls.handshake.extensions_supported_group"].split("|") if g]
                row["signature_algorithms"] = len([a for a in r["tls.handshake.sig_hash_alg"].split("|") if a])
                row["alpn"] = r["tls.handshake.extensions_alpn_str"].replace("|", ", ") or "(none)"
            if "2" in kinds:
                row["server_hello_version"] = name(VERSIONS, r["tls.handshake.version"].split("|")[0])
                row["chosen_version"] = name(VERSIONS, r["tls.handshake.extensions.supported_version"].split("|")[0])
                row["chosen_suite"] = name(CIPHER_SUITES, r["tls.handshake.ciphersuite"].split("|")[0])
                row["chosen_group"] = name(GROUPS, r["tls.handshake.extensions_key_share_group"].split("|")[0])
                row["server_hello_frame"] = int(r["frame.number"])
                random = r["tls.handshake.random"].split("|")[-1].replace(":", "").lower()
                if random != HELLO_RETRY_RANDOM:  # RFC 8446 4.1.3: a HelloRetryRequest's random is fixed
                    row["server_random"] = random
        certificates = self.fields("tls.handshake.type == 11", ["tls.handshake.certificate"])
        names = certificate_names(certificates[0]["tls.handshake.certificate"] if certificates else "")
        for row in table.values():
            row["certificate_subject"] = names.get("subject", "(encrypted: no keys)")
            row["certificate_issuer"] = names.get("issuer", "(encrypted: no keys)")
            for key in ("san", "not_before", "not_after", "key", "signature_algorithm", "key_algorithm", "pub_hex",
                        "pub_bytes", "der_bytes", "chain"):
                row["certificate_" + key] = names.get(key, "")
        return [table[k] for k in sorted(table)]

    STATS = {"conv,tcp": "TCP Conversations", "io,phs": "Protocol Hierarchy Statistics"}

    def stats(self, which):
        """tshark's statistics (-z conv,tcp or io,phs): both taps come from one run."""
        if "_stats" not in self.__dict__:
            args = self.decode_args() + ["-q"] + [a for tap in self.STATS for a in ("-z", tap)]
            self._stats, block = {}, None
            for line in tshark(self.path, args).splitlines():
                if block is None and line.startswith("====="):
                    block = [line]
                elif block is not None:
                    block.append(line)
                    if line.startswith("=====") and len(block) > 1:
                        title = next((t for t, heading in self.STATS.items() if heading in block[1]), block[1])
                        self._stats[title] = "\n".join(block)
                        block = None
        return self._stats.get(which, "")

    # ---- a read shared between processes (make grade: the facts child reads, the report reuses) ----

    CACHED = ("capinfos", "truncated", "commented", "secrets", "mode", "smtp_port", "http_port", "has_tls")

    def save(self, folder):
        """Leaves what this read of the file found (capinfos, the mode and ports, the table) in
        folder, for Capture.load of the same file unchanged (written whole or not at all)."""
        data = {"version": CACHE_VERSION, "path": os.path.abspath(self.path), "fields": TABLE_FIELDS,
                "rows": [[row[f] for f in TABLE_FIELDS] for row in self.table()]}
        data.update({k: getattr(self, k) for k in self.CACHED})
        target = cache_path(folder, self.path)
        handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as f:
                json.dump(data, f)
            os.replace(tmp, target)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, folder):
        """The Capture that save() left in folder for this file (same path, size, mtime and inode);
        without one (or with one that does not fit), the file is read as Capture(path)."""
        try:
            with open(cache_path(folder, path), encoding="utf-8") as f:
                data = json.load(f)
            if data.get("version") != CACHE_VERSION or data.get("path") != os.path.abspath(path) or \
                    data.get("fields") != TABLE_FIELDS:
                raise ValueError("not this file's")
            rows = data["rows"]
            if not all(isinstance(r, list) and len(r) == len(TABLE_FIELDS) and all(isinstance(v, str) for v in r)
                       for r in rows):
                raise ValueError("damaged")
            types = {"capinfos": str, "truncated": bool, "commented": bool, "secrets": int, "mode": str,
                     "smtp_port": int, "http_port": int, "has_tls": bool}
            if not all(type(data[k]) is types[k] for k in cls.CACHED):
                raise ValueError("damaged")
            cap = cls.__new__(cls)
            cap.path = path
            for k in cls.CACHED:
                setattr(cap, k, data[k])
            cap._table = [dict(zip(TABLE_FIELDS, r)) for r in rows]
            return cap
        except (OSError, ValueError, KeyError, TypeError):
            return cls(path)

    def totals(self):
        packets = int((re.search(r"Number of packets:\s*(\d+)", self.capinfos) or [0, 0])[1])
        size = int((re.search(r"Data size:\s*(\d+)", self.capinfos) or [0, 0])[1])
        streams = len({row["tcp.stream"] for row in self.table() if row["tcp.stream"]})
        return {"packets": packets, "bytes": size, "connections": streams}

    def without_secrets(self):
        """The same capture as an eavesdropper has it: a copy without the embedded key log."""
        handle, path = tempfile.mkstemp(suffix=".pcapng")
        os.close(handle)
        strip_secrets(self.path, path)
        blind = Capture.__new__(Capture)
        blind.__dict__.update(self.__dict__)
        for answer in ("_fields_cache", "_handshakes", "_table", "_stats"):
            blind.__dict__.pop(answer, None)  # the answers of the decrypted file are not its own
        blind.path = path
        blind.secrets = 0
        return blind


CACHE_VERSION = 2


def cache_path(folder, path):
    """Where Capture.save leaves a file's read: named by the file's path, size, mtime and inode, so a
    file changed or replaced since is read again."""
    st = os.stat(path)
    ident = "\0".join([str(CACHE_VERSION), os.path.abspath(path), str(st.st_size), str(st.st_mtime_ns), str(st.st_ino)])
    return os.path.join(folder, hashlib.sha256(ident.encode("utf-8", "surrogateescape")).hexdigest()[:32] +
                        ".capture.json")


def strip_secrets(source, target):
    """Copies a pcapng file without its Decryption Secrets Blocks (block type 0x0000000A). Wireshark
    4.0's editcap cannot rewrite a file that holds secrets, and pcapng's block format is simple: type,
    total length, body, total length again; the byte order comes from the section header's magic."""
    data = open(source, "rb").read()
    if data[:4] != b"\x0a\x0d\x0d\x0a":
        shutil.copyfile(source, target)  # pcap or other: it cannot hold secrets anyway
        return
    out = bytearray()
    pos, order = 0, "<"
    while pos + 12 <= len(data):
        if data[pos:pos + 4] == b"\x0a\x0d\x0d\x0a":
            order = "<" if data[pos + 8:pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        block_type, length = struct.unpack(order + "II", data[pos:pos + 8])
        if length < 12 or pos + length > len(data):
            raise RuntimeError(f"{source}: damaged pcapng block at offset {pos}")
        if block_type != 0x0000000A:
            out += data[pos:pos + length]
        pos += length
    with open(target, "wb") as f:
        f.write(out)
