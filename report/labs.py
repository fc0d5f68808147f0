"""The Kurose & Ross Wireshark labs (v8.1), TLS and HTTP, question by question: each answered from one
capture with the frame numbers to look at, and each TLS 1.2 notion the lab asks about mapped to what
TLS 1.3 does instead. The questions, in our own words, and the section that answers each are the
one table report/questions.csv (a test checks every row against a report of `make capture`'s files).

Everything comes from the capture's one tshark pass (Capture.table) and what analyze.py already
derives from it (handshakes, records): no tshark run per question.

    answers = labs.answers(cap)     # {"tls-7": Markdown, ...}: only the questions this capture answers"""

import csv
import os

from captures.facts import decode_credentials

QUESTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "questions.csv")


def questions():
    """[{"lab", "number", "question", "anchor"}] in the labs' order."""
    with open(QUESTIONS, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _on(value):
    return value in ("1", "True")


def _first(value):
    return value.split("|")[0] if value else ""


def _header_lines(value):
    """tshark's http.request.line / http.response.line ("Name: value\\r\\n" joined by |) -> lines."""
    return [line.replace("\\r\\n", "").rstrip("\r\n") for line in value.split("|") if line.strip()]


def _header(lines, name):
    wanted = name.lower() + ":"
    return next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith(wanted)), "")


def answers(cap):
    """Markdown answers keyed by the anchors of questions.csv, for the questions this capture answers."""
    out = {}
    rows = cap.table()
    by_stream = {}
    for r in rows:
        if r["tcp.stream"].isdigit():
            by_stream.setdefault(int(r["tcp.stream"]), []).append(r)
    if cap.has_tls:
        out.update(_tls_answers(cap, rows, by_stream))
    out.update(_http_answers(cap, rows, by_stream))
    return out


# ---- the TLS lab ---------------------------------------------------------------------------------

def _tls_answers(cap, rows, by_stream):
    from report.report import frames, md_code, md_text
    handshakes = [h for h in cap.handshakes() if h.get("client_hello_frame")]
    if not handshakes:
        return {}
    # The lab watches a browser fetch a page over HTTPS: the first HTTPS connection when there is one.
    h = next((x for x in handshakes if x.get("server_port") == cap.http_port), handshakes[0])
    stream = h["stream"]
    service = "HTTPS" if h.get("server_port") == cap.http_port else "SMTP over TLS"
    conn = f"connection {stream}, {service} on port {h.get('server_port', '?')}"
    frames_of = by_stream.get(stream, [])
    records = [r for r in cap.tls_records() if r["stream"] == stream]
    a = {}

    syn = next((r for r in frames_of if _on(r["tcp.flags.syn"]) and not _on(r["tcp.flags.ack"])), None)
    synack = next((r for r in frames_of if _on(r["tcp.flags.syn"]) and _on(r["tcp.flags.ack"])), None)
    hello = h["client_hello_frame"]
    ack = next((r for r in frames_of if synack and int(r["frame.number"]) > int(synack["frame.number"]) and
                int(r["frame.number"]) < hello and not _on(r["tcp.flags.syn"])), None)
    if syn:
        a["tls-1"] = (f"Frame {syn['frame.number']}: the client's SYN from port {md_text(syn['tcp.srcport'])} to the "
                      f"server's port {md_text(syn['tcp.dstport'])}, opening {conn} (the connection the answers "
                      "below follow).")
        a["tls-2"] = ("Before. TCP's three-way handshake comes first: SYN in frame " + syn["frame.number"] +
                      (f", SYN-ACK in frame {synack['frame.number']}" if synack else "") +
                      (f", ACK in frame {ack['frame.number']}" if ack else "") +
                      f"; only then the ClientHello, in frame {hello}. TLS runs over an open TCP connection "
                      "(RFC 8446 1: it needs a reliable, in-order transport).")
    a["tls-3"] = f"Frame {hello}, on {conn}."
    a["tls-4"] = (f"The ClientHello in frame {hello} says {md_text(h.get('client_hello_version', '?'))} in its "
                  f"version field (TLS 1.3 calls it legacy_version) and {md_text(h.get('client_record_version', '?'))} "
                  "in the record header; the versions it really supports are in the supported_versions extension: "
                  f"{md_text(', '.join(h.get('offered_versions', [])) or '(none: a TLS 1.2 client)')}. TLS 1.3 froze "
                  "the old fields at TLS 1.2 so that middleboxes that know only TLS 1.2 let it through "
                  "(RFC 8446 4.1.2, 4.2.1).")
    suites = h.get("offered_suites", [])
    a["tls-5"] = (f"{len(suites)} cipher suites in frame {hello}: " + md_text(", ".join(suites)) +
                  (" (TLS_EMPTY_RENEGOTIATION_INFO_SCSV is a signal, not a real suite: RFC 5746 3.3)"
                   if "TLS_EMPTY_RENEGOTIATION_INFO_SCSV" in suites else "") + ".")
    random = h.get("client_random", "")
    a["tls-6"] = (f"{md_code(random[:2])}: the client random in frame {hello} is the 32 bytes {md_code(random)}."
                  if random else f"Not readable in frame {hello}.")
    server_random = h.get("server_random", "")
    a["tls-7"] = (f"Client random {md_code(random)} (frame {hello}); server random {md_code(server_random)} "
                  f"(frame {h.get('server_hello_frame', '?')}). Each side contributes fresh random bytes to the "
                  "handshake, so every connection's keys are new even between the same client and server: a "
                  "recorded handshake cannot be replayed, and an attacker cannot make two connections share "
                  "keys. In TLS 1.2 the randoms go straight into the master secret and the key block (RFC 5246 "
                  "8.1, 6.3); in TLS 1.3 they are part of the transcript hash that every key is derived from "
                  "(RFC 8446 4.1.2, 7.1).")
    sh = h.get("server_hello_frame")
    if sh:
        a["tls-8"] = f"Frame {sh}, on {conn}."
        a["tls-9"] = (f"{md_text(h.get('chosen_suite', '?'))}, in the ServerHello of frame {sh}, from the "
                      f"{len(suites)} the client offered in frame {hello}.")
        a["tls-10"] = (f"Yes: {md_code(server_random)} in frame {sh}. Like the client's, it makes this "
                       "connection's keys unique and its handshake impossible to replay. A TLS 1.3 server that "
                       "has to fall back to TLS 1.2 also writes DOWNGRD into its last 8 bytes, so a client can "
                       "detect an attacker who forced the downgrade (RFC 8446 4.1.3).")
    cert_frames = [r["frame"] for r in records if "Certificate" in r.get("handshake", [])]
    hidden = "inside an encrypted record (application_data on the wire; TLS 1.3 encrypts it, RFC 8446 4.4.2)" \
        if h.get("chosen_version") == "TLS 1.3" else "in clear"
    if cert_frames:
        a["tls-11"] = (f"{frames(cert_frames).capitalize()}, {hidden}; this capture's embedded keys decrypt it. "
                       f"The certificate is {h.get('certificate_der_bytes') or '?'} bytes of DER.")
    else:
        a["tls-11"] = (f"Not readable: the Certificate message travels {hidden} and this capture holds no keys "
                       f"for it (the server's flight starts in frame {sh or '?'}).")
    chain = h.get("certificate_chain") or []
    if chain:
        listed = "; ".join(f"{i + 1}. {md_text(subject)}, issued by {md_text(issuer)}"
                           for i, (subject, issuer) in enumerate(chain))
        a["tls-12"] = (f"The Certificate message in {frames(cert_frames)} holds {len(chain)} "
                       f"certificate{'s' if len(chain) != 1 else ''}: {listed}. The chain is lab CA → server: the "
                       "server sends its own certificate (and any intermediates), never the root: the client "
                       "already holds the lab CA's certificate (certs/ca.pem, given with --ca) as its trust "
                       "anchor (RFC 8446 4.4.2: the root may be omitted).")
        a["tls-13"] = (f"{md_text(h.get('certificate_issuer', '?'))} (the certificate's issuer, in "
                       f"{frames(cert_frames)}): the lab's own CA, made by maillab-certs.")
        a["tls-14"] = (f"{md_text(h.get('certificate_signature_algorithm') or '?')}: the CA signed the certificate "
                       f"with its elliptic-curve key and SHA-256 (certificate in {frames(cert_frames)}). In TLS 1.3 "
                       "the server then proves it holds the matching private key with its own signature, in "
                       "CertificateVerify" + (f" ({frames([r['frame'] for r in records if 'CertificateVerify' in r.get('handshake', [])])})"
                                              if any('CertificateVerify' in r.get('handshake', []) for r in records)
                                              else "") + ".")
        pub = h.get("certificate_pub_hex", "")
        a["tls-15"] = (f"{md_text(h.get('certificate_key') or '?')} ({md_text(h.get('certificate_key_algorithm', ''))}), "
                       f"{h.get('certificate_pub_bytes') or '?'} bytes, in {frames(cert_frames)}. Its first hex digits "
                       f"are {md_code(pub[:4])}: an elliptic-curve key is a point, written 04 (uncompressed) then "
                       "its x and y coordinates of 32 bytes each, where the lab's RSA key has a modulus. "
                       "All of it:\n\n```\n" + "\n".join(" ".join(pub[i:i + 2] for i in range(j, min(j + 64, len(pub)), 2))
                                                        for j in range(0, len(pub), 64)) + "\n```")
    else:
        a["tls-12"] = a["tls-13"] = a["tls-14"] = a["tls-15"] = (
            f"Not readable: TLS 1.3 encrypts the Certificate message and this capture holds no keys (the server's "
            f"flight is in frame {sh or '?'}). Capture with `make capture` (the keys are embedded).")
    addresses = sorted({(r["ip.src"] or r["ipv6.src"]) for r in rows} | {(r["ip.dst"] or r["ipv6.dst"]) for r in rows}
                       - {""})
    a["tls-16"] = (f"No. All {len(rows)} frames (frames 1 to {rows[-1]['frame.number'] if rows else 0}) are "
                   f"between {md_text(' and '.join(addresses))}" +
                   (" (client and server both on this machine's loopback)" if len(addresses) == 1 else
                    ": the client and the server") + ", nobody else. The client "
                   "needs no message from the CA: it already holds the CA's certificate, and with it the CA's public "
                   "key (certs/ca.pem, our clients' --ca; a browser's trust store), and checks the CA's signature "
                   "on the server's certificate itself. (Revocation checks could ask an OCSP responder; our "
                   "clients do not, and a server can staple that answer into its own handshake.)")
    first_flight = [r for r in records if r["dir"] == "S" and r["frame"] <= (max(cert_frames) if cert_frames else sh or 0)
                    and r["frame"] >= (sh or 0)]
    finished_s = next((r for r in records if r["dir"] == "S" and "Finished" in r.get("handshake", [])), None)
    flight = ", ".join(m for r in first_flight for m in (r.get("handshake") or [r["type"]]))
    if h.get("chosen_version") == "TLS 1.3":
        a["tls-17"] = ("None: TLS 1.3 has no ServerHelloDone (RFC 8446 removed it). The server's whole first flight "
                       f"is in frame {sh}: {md_text(flight or 'ServerHello')}. The change_cipher_spec record there "
                       "carries nothing (it only reassures middleboxes, RFC 8446 D.4); EncryptedExtensions, "
                       "Certificate, CertificateVerify and Finished replace ServerKeyExchange and ServerHelloDone, "
                       "and the Finished " + (f"(frame {finished_s['frame']}) " if finished_s else "") +
                       "is what ends the server's flight.")
        finished_c = next((r for r in records if r["dir"] == "C" and "Finished" in r.get("handshake", [])), None)
        ccs_c = next((r for r in records if r["dir"] == "C" and r.get("wire_type") == "change_cipher_spec"), None)
        groups = ", ".join(h.get("offered_groups", [])) or "?"
        a["tls-18"] = ("TLS 1.3 has no ClientKeyExchange: the client's key material went out already, in the key_share "
                       f"extension of its ClientHello (frame {hello}: {md_text(groups)}), and the server's in the "
                       f"ServerHello's key_share (frame {sh}, {md_text(h.get('chosen_group', '?'))}); both sides "
                       "compute the shared secret after one round trip (RFC 8446 4.2.8). What is left of the lab's "
                       "frame is " + (f"the client's change_cipher_spec (frame {ccs_c['frame']}, middlebox "
                                      "compatibility only) and " if ccs_c else "") +
                       (f"its encrypted Finished (frame {finished_c['frame']})." if finished_c else
                        "its encrypted Finished (not readable without the keys)."))
    else:
        a["tls-17"] = f"{md_text(h.get('chosen_version', '?'))}: look for ServerHelloDone after frame {sh}."
        a["tls-18"] = f"{md_text(h.get('chosen_version', '?'))}: look for ClientKeyExchange after frame {sh}."
    requested = [r["frame"] for r in records if "CertificateRequest" in r.get("handshake", [])]
    client_certs = [r["frame"] for r in records if r["dir"] == "C" and "Certificate" in r.get("handshake", [])]
    handshake_frames = sorted({r["frame"] for r in records if r.get("handshake")})
    a["tls-19"] = ("No. The server sent no CertificateRequest and the client no Certificate: the handshake "
                   f"messages of {conn} ({frames(handshake_frames)}) are "
                   + md_text(", ".join(m for r in records for m in r.get("handshake", []))) +
                   ". The client authenticates later, inside the encrypted connection, with a password (SMTP AUTH, "
                   "HTTP Basic)." if not requested and not client_certs else
                   f"Yes: CertificateRequest in {frames(requested)}, client Certificate in {frames(client_certs)}.")
    suite = h.get("chosen_suite", "")
    cipher = {"TLS_AES_256_GCM_SHA384": "AES with a 256-bit key in GCM mode (AES-256-GCM), with SHA-384 for the key "
                                        "derivation (HKDF)",
              "TLS_AES_128_GCM_SHA256": "AES with a 128-bit key in GCM mode (AES-128-GCM), with SHA-256 for HKDF",
              "TLS_CHACHA20_POLY1305_SHA256": "ChaCha20 with Poly1305 (ChaCha20-Poly1305), with SHA-256 for HKDF"}
    a["tls-20"] = (f"{md_text(cipher.get(suite, suite or '?'))}: the suite {md_text(suite or '?')} chosen in frame "
                   f"{sh}. Both directions use it, each with its own key (RFC 8446 7.3).")
    a["tls-21"] = (f"In the ServerHello (frame {sh}): the server picks one of the suites the ClientHello offered "
                   f"(frame {hello}). A TLS 1.3 suite names only the AEAD cipher and the hash; the key exchange "
                   "(key_share) and the signature are negotiated in their own extensions (RFC 8446 4.1.3).")
    app_c = next((r for r in records if r["dir"] == "C" and r["type"] == "application_data" and
                  (r.get("decrypted") or not cap.secrets)), None)
    app_s = next((r for r in records if r["dir"] == "S" and r["type"] == "application_data" and
                  (r.get("decrypted") or not cap.secrets)), None)
    if app_c:
        a["tls-22"] = (f"Frame {app_c['frame']} ({app_c['length']} bytes of record). In TLS 1.3 every record after the "
                       "ServerHello says application_data on the wire, the client's Finished too: the first one that "
                       "really is application data is known only once decrypted (its inner content type).")
        said = next((f"{r['smtp.command_line'] or r['smtp.response']}" for r in by_stream.get(stream, [])
                     if r["frame.number"] == str(app_c["frame"]) and (r["smtp.command_line"] or r["smtp.response"])), "")
        asked = next((f"{_first(r['http.request.method'])} {_first(r['http.request.uri'])}" for r in by_stream.get(stream, [])
                      if r["frame.number"] == str(app_c["frame"]) and r["http.request.method"]), "")
        content = (asked or said.split("|")[0].replace("\\r\\n", "")).strip()
        a["tls-23"] = ((f"Decrypted, frame {app_c['frame']} holds {md_code(content)}: the "
                        f"{'HTTP request' if asked else 'first SMTP command'} the client had to send, now hidden "
                        "from anyone without the keys.") if content else
                       f"The first request of the application protocol ({'HTTP' if 'HTTPS' in service else 'SMTP'}) "
                       f"in frame {app_c['frame']}: without the keys an eavesdropper sees only its length "
                       f"({app_c['length']} bytes).")
    if app_s:
        tickets = [r["frame"] for r in records if r["dir"] == "S" and "NewSessionTicket" in r.get("handshake", [])]
        a["tls-24"] = (f"Frame {app_s['frame']}" +
                       (f"; the server's records before it ({frames(tickets)}) are application_data on the wire too "
                        "but carry a NewSessionTicket (a handshake message, for resuming later)" if tickets else "") +
                       ".")
    return a


# ---- the HTTP lab --------------------------------------------------------------------------------

def exchanges(cap):
    """The capture's HTTP exchanges (see _exchanges), from its one read."""
    return _exchanges(cap, cap.table())


def _exchanges(cap, rows):
    """[{request row, response row or None, request and response header lines}] in request order."""
    requests = [r for r in rows if r["http.request.method"]]
    responses = [r for r in rows if r["http.response.code"]]
    out, used = [], set()
    for q in requests:
        answer = next((r for r in responses if _first(r["http.request_in"]) == q["frame.number"]), None) or \
            next((r for r in responses if r["tcp.stream"] == q["tcp.stream"] and
                  int(r["frame.number"]) > int(q["frame.number"]) and r["frame.number"] not in used), None)
        if answer is not None:
            used.add(answer["frame.number"])
        out.append({"q": q, "r": answer, "qh": _header_lines(q["http.request.line"]),
                    "rh": _header_lines(answer["http.response.line"]) if answer is not None else []})
    return out


def _request_text(x):
    q = x["q"]
    return "\n".join([f"{_first(q['http.request.method'])} {_first(q['http.request.uri'])} "
                      f"{_first(q['http.request.version']) or 'HTTP/1.1'}"] + x["qh"])


def _response_text(x):
    r = x["r"]
    if r is None:
        return "(no response in the capture)"
    return "\n".join([f"{_first(r['http.response.version']) or 'HTTP/1.1'} {_first(r['http.response.code'])} "
                      f"{_first(r['http.response.phrase'])}"] + x["rh"])


def headers_block(x):
    """One exchange's request and response as they were on the wire (header lines, no body)."""
    from report.report import md_block
    return md_block(_request_text(x) + "\n\n" + _response_text(x))


def _http_answers(cap, rows, by_stream):
    from report.report import frames, md_code, md_text
    xs = _exchanges(cap, rows)
    if not xs:
        return {}
    a = {}
    secured = "decrypted from TLS with the embedded keys" if cap.has_tls else "in clear on the wire"
    fr = lambda r: r["frame.number"] if r is not None else "?"  # noqa: E731
    versions = sorted({_first(x["q"]["http.request.version"]) for x in xs} - {""})
    answered = [x for x in xs if x["r"] is not None]
    rversions = sorted({_first(x["r"]["http.response.version"]) for x in answered} - {""})
    a["http-1"] = (f"The client asks in {md_text(', '.join(versions) or '?')} (request line of frame "
                   f"{xs[0]['q']['frame.number']}); the server answers in {md_text(', '.join(rversions) or '?')} "
                   f"(status line of frame {fr(xs[0]['r'])}). Every request and response here is {secured}.")
    languages = {}
    for x in xs:
        value = _header(x["qh"], "Accept-Language")
        if value:
            languages.setdefault(value, []).append(x["q"]["frame.number"])
    without = [x["q"]["frame.number"] for x in xs if not _header(x["qh"], "Accept-Language")]
    a["http-2"] = ("; ".join(f"{md_code(value)} in {frames(numbers)}" for value, numbers in languages.items()) +
                   " (each language with its preference, q)" + (f"; the requests of {frames(without)} send no "
                                                                 "Accept-Language (our retriever client's)" if without else "")
                   + "." if languages else f"No request says Accept-Language ({frames(without)}).")
    q0 = xs[0]["q"]
    client = q0["ip.src"] or q0["ipv6.src"]
    server = q0["ip.dst"] or q0["ipv6.dst"]
    a["http-3"] = (f"Client {md_text(client)}, server {md_text(server)} (frame {q0['frame.number']}, to port "
                   f"{md_text(q0['tcp.dstport'])}): both on this computer's loopback, since the lab runs here.")
    codes = {}
    for x in answered:
        codes.setdefault(f"{_first(x['r']['http.response.code'])} {_first(x['r']['http.response.phrase'])}", []).append(
            x["r"]["frame.number"])
    ok = next((x for x in answered if _first(x["r"]["http.response.code"]) == "200"), answered[0] if answered else None)
    a["http-4"] = "; ".join(f"{md_text(code)} in {frames(numbers)}" for code, numbers in codes.items()) + "."
    if ok:
        lm = _header(ok["rh"], "Last-Modified")
        length = _header(ok["rh"], "Content-Length")
        a["http-5"] = (f"Last-Modified: {md_code(lm)} in the response of frame {ok['r']['frame.number']} (to the GET "
                       f"of {md_code(_first(ok['q']['http.request.uri']))} in frame {ok['q']['frame.number']})."
                       if lm else f"The response in frame {ok['r']['frame.number']} has no Last-Modified.")
        a["http-6"] = (f"Content-Length: {md_text(length or '?')} bytes in the response of frame "
                       f"{ok['r']['frame.number']} ({md_text(_header(ok['rh'], 'Content-Type') or 'no type')}).")
        a["http-7"] = (f"Yes: Wireshark's packet list shows only the request and status lines; the messages of frames "
                       f"{ok['q']['frame.number']} and {ok['r']['frame.number']} hold these headers too "
                       f"({md_text(', '.join(line.split(':')[0] for line in ok['qh'] + ok['rh']))}). In full:\n\n"
                       + headers_block(ok) + "\nEvery exchange's headers are in the capture's section below.")
    conditional = next((x for x in xs if _header(x["qh"], "If-Modified-Since")), None)

    def unconditional_200(x):
        return (not _header(x["qh"], "If-Modified-Since") and not _header(x["qh"], "If-None-Match") and
                x["r"] is not None and _first(x["r"]["http.response.code"]) == "200")
    if conditional:
        uri = _first(conditional["q"]["http.request.uri"])
        earlier = [x for x in xs if _first(x["q"]["http.request.uri"]) == uri and
                   int(x["q"]["frame.number"]) < int(conditional["q"]["frame.number"]) and unconditional_200(x)]
        first = earlier[-1] if earlier else None
    else:
        # No repeated GET: the first questions still have their answer, from the first plain GET.
        first = next((x for x in xs if _first(x["q"]["http.request.method"]) == "GET" and unconditional_200(x)), None)
        uri = _first(first["q"]["http.request.uri"]) if first else ""
        by_etag = next((x for x in xs if _header(x["qh"], "If-None-Match") and x["r"] is not None), None)
        if by_etag:
            # The repeated GET asked with the other validator (the README's --header 'If-None-Match: ...').
            r = by_etag["r"]
            a["http-10"] = (f"No: the repeated GET of {md_code(_first(by_etag['q']['http.request.uri']))} in frame "
                            f"{by_etag['q']['frame.number']} sends If-None-Match: "
                            f"{md_code(_header(by_etag['qh'], 'If-None-Match'))} instead, the ETag of the copy it "
                            "kept (RFC 9110 13.1.2; a server asked both uses that one, 13.2.2).")
            a["http-11"] = (f"{md_text(_first(r['http.response.code']))} {md_text(_first(r['http.response.phrase']))} in "
                            f"frame {r['frame.number']}" + (": no content; the client's copy is still good (RFC 9110 "
                                                             "15.4.5)." if _first(r["http.response.code"]) == "304" else "."))
        elif first:
            lm = _header(first["rh"], "Last-Modified")
            a["http-10"] = ("No GET in this capture repeats a request with If-Modified-Since. To see it, ask for "
                            f"{md_code(uri)} again sending its first answer's Last-Modified"
                            + (f" ({md_code(lm)})" if lm else "") + " as If-Modified-Since (retrieverclient's "
                            "`--header 'If-Modified-Since: DATE'`, curl's `-H`), or use `make capture`, whose session does.")
            a["http-11"] = "Not in this capture: no GET repeated with If-Modified-Since (see the question above)."
    if first:
        a["http-8"] = (f"No: the GET of {md_code(uri)} in frame {first['q']['frame.number']} has no "
                       "If-Modified-Since (the client had no copy yet).")
        a["http-9"] = (f"Yes: the response in frame {first['r']['frame.number']} is "
                       f"{md_text(_first(first['r']['http.response.code']))} "
                       f"{md_text(_first(first['r']['http.response.phrase']))} with Content-Length "
                       f"{md_text(_header(first['rh'], 'Content-Length') or '?')}: a body follows the headers. It also "
                       f"gives the validators the client can send back: Last-Modified "
                       f"{md_code(_header(first['rh'], 'Last-Modified'))} and ETag "
                       f"{md_code(_header(first['rh'], 'ETag'))}.")
    if conditional:
        value = _header(conditional["qh"], "If-Modified-Since")
        a["http-10"] = (f"Yes: frame {conditional['q']['frame.number']} says If-Modified-Since: {md_code(value)}, "
                        "the Last-Modified date of the copy the client kept" +
                        (f" (from frame {first['r']['frame.number']})" if first else "") + ".")
        r = conditional["r"]
        if r is not None:
            length = _header(conditional['rh'], 'Content-Length')
            a["http-11"] = (f"{md_text(_first(r['http.response.code']))} {md_text(_first(r['http.response.phrase']))} in "
                            f"frame {r['frame.number']}, " +
                            (f"Content-Length {md_text(length)}" if length else "no Content-Length (a 304 never has a "
                             "body, RFC 9112 6.3)") + ": no content. The resource "
                            "has not changed since that date, so the client's copy is still good (RFC 9110 13.1.3, "
                            "15.4.5).")
    gets = [x for x in xs if _first(x["q"]["http.request.method"]) == "GET"]

    def length(x):
        try:
            return int(_header(x["rh"], "Content-Length") or 0)
        except ValueError:
            return 0
    longest = max(answered, key=length, default=None)
    if longest and length(longest) > 0:
        q, r = longest["q"], longest["r"]
        a["http-12"] = (f"{len(gets)} GETs in the capture ({frames([x['q']['frame.number'] for x in gets])}); the long "
                        f"document, {md_code(_first(q['http.request.uri']))}, is asked for in frame {q['frame.number']}.")
        a["http-13"] = (f"Frame {r['frame.number']}: Wireshark shows the response, status line included, in the frame "
                        "where its last piece arrived, once the pieces are reassembled.")
        a["http-14"] = (f"{md_text(_first(r['http.response.code']))} {md_text(_first(r['http.response.phrase']))} "
                        f"(frame {r['frame.number']}).")
        stream = by_stream.get(int(q["tcp.stream"]), [])
        server_port = q["tcp.dstport"]
        carrying = [x for x in stream if x["tcp.srcport"] == server_port and
                    int(q["frame.number"]) < int(x["frame.number"]) <= int(r["frame.number"]) and
                    int(x["tcp.len"] or 0) > 0]
        tls_records = max((int(v) for v in r["tls.segment.count"].split("|") if v.isdigit()), default=0)
        tcp_segments = max((int(v) for v in r["tcp.segment.count"].split("|") if v.isdigit()), default=0)
        sizes = [int(x["tcp.len"]) for x in carrying]
        a["http-15"] = ((f"{len(carrying)} TCP segments with data, {frames([x['frame.number'] for x in carrying])}, "
                         f"carry the response of {length(longest)} bytes of content" if len(carrying) != 1 else
                         f"One TCP segment with data, {frames([x['frame.number'] for x in carrying])}, carries the "
                         f"response of {length(longest)} bytes of content")
                        + ((f" (from {min(sizes)} to {max(sizes)} bytes each: loopback's large segments)" if min(sizes) != max(sizes)
                            else f" ({sizes[0]} bytes" + (" each" if len(sizes) > 1 else "") + ")") if sizes else "")
                        + (f"; inside them, {tls_records} TLS records (a record holds at most 16 KB of plaintext, "
                           "RFC 8446 5.1), which Wireshark reassembles into the one HTTP response"
                           if tls_records > 1 else "")
                        + (f"; Wireshark reassembled it from {tcp_segments} TCP segments" if tcp_segments > 1 else "")
                        + ".")
    addresses = {}
    for x in gets:
        where = f"{x['q']['ip.dst'] or x['q']['ipv6.dst']} port {x['q']['tcp.dstport']}"
        addresses.setdefault(where, []).append(x["q"]["frame.number"])
    a["http-16"] = (f"{len(gets)} GETs, all to one server: " +
                    "; ".join(f"{md_text(where)} ({frames(numbers)})" for where, numbers in addresses.items()) +
                    ". A browser would also fetch each embedded object this way.")
    a["http-17"] = _series_or_parallel(xs, frames)
    challenge = next((x for x in xs if x["r"] is not None and _first(x["r"]["http.response.code"]) == "401"), None)
    if challenge:
        r = challenge["r"]
        a["http-18"] = (f"{md_text(_first(r['http.response.code']))} {md_text(_first(r['http.response.phrase']))} in "
                        f"frame {r['frame.number']}, to the GET without credentials in frame "
                        f"{challenge['q']['frame.number']}, with the challenge WWW-Authenticate: "
                        f"{md_code(_header(challenge['rh'], 'WWW-Authenticate'))} (RFC 9110 11.6.1, RFC 7617).")
        retry = next((x for x in xs if int(x["q"]["frame.number"]) > int(challenge["q"]["frame.number"]) and
                      _header(x["qh"], "Authorization")), None)
        if retry:
            value = _header(retry["qh"], "Authorization")
            found = decode_credentials(value)
            a["http-19"] = (f"Authorization, in frame {retry['q']['frame.number']}: {md_code(value)}" +
                            (f". It is base64, not encryption: it decodes to {md_code(found.decoded)}, user and password "
                             "for anyone who can read the request" if found else "") +
                            (" (here only with the keys: TLS protects it on the wire)." if cap.has_tls else
                             " (here anyone on the path: this capture is plaintext).") +
                            (f" The server answered {md_text(_first(retry['r']['http.response.code']))} in frame "
                             f"{retry['r']['frame.number']}." if retry["r"] is not None else ""))
    return a


def _series_or_parallel(xs, frames):
    """Requests in series on one connection (each sent after the previous answer) and requests in
    parallel on two connections (both sent before either answer)."""
    by_conn = {}
    for x in xs:
        by_conn.setdefault(x["q"]["tcp.stream"], []).append(x)
    serial = next((pair for pair in (v[:2] for v in by_conn.values() if len(v) >= 2)
                   if pair[0]["r"] is not None and int(pair[1]["q"]["frame.number"]) > int(pair[0]["r"]["frame.number"])),
                  None)
    parallel = None
    singles = [v[0] for v in by_conn.values() if v[0]["r"] is not None]
    for i, x in enumerate(singles):
        for y in singles[i + 1:]:
            if int(y["q"]["frame.number"]) < int(x["r"]["frame.number"]) and \
                    int(x["q"]["frame.number"]) < int(y["r"]["frame.number"]):
                parallel = (x, y)
                break
        if parallel:
            break
    parts = []
    if serial:
        a, b = serial
        parts.append(f"In series: on connection {a['q']['tcp.stream']} the request of frame {a['q']['frame.number']} "
                     f"is answered in frame {a['r']['frame.number']}, and only then does the next request go, in frame "
                     f"{b['q']['frame.number']}, on the same connection (a persistent connection, RFC 9112 9.3)")
    if parallel:
        x, y = parallel
        parts.append(f"in parallel: connections {x['q']['tcp.stream']} and {y['q']['tcp.stream']} each send a request "
                     f"(frames {x['q']['frame.number']} and {y['q']['frame.number']}) before either answer comes "
                     f"(frames {x['r']['frame.number']} and {y['r']['frame.number']}): the times overlap, which one "
                     "connection could not do")
    if not parts:
        return f"Each request has its connection to itself, one after another ({frames([x['q']['frame.number'] for x in xs])})."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + ". Tell them apart by the connection (tcp.stream) and by whether a request " \
        "leaves before the previous answer has arrived."
