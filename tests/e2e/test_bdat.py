"""CHUNKING (RFC 3030) end to end: a stock client that uses BDAT when the server offers it (Perl's
Net::SMTP, Debian's perl-modules; TLS through libio-socket-ssl-perl), and a raw TLS socket for what
no polite client sends: chunks split across writes, pipelined, binary, refused."""

import base64
import shutil
import subprocess

from tests.e2e.harness import Conversation, Server, Skip, messages, register, test

# Net::SMTP's bdat/bdatlast write the BDAT command and its octets themselves; it turns them on only
# with MAIL FROM BODY=BINARYMIME (which maillab does not offer: RFC 3030 3 lets CHUNKING stand alone),
# so the script checks that EHLO lists CHUNKING and then turns them on. (swaks and smtplib have no
# BDAT; Postfix's and Exim's clients do, but need a whole MTA.) AUTH goes as a plain command so
# Authen::SASL is not needed.
PERL_CLIENT = r"""
use strict; use warnings;
use Net::SMTP; use MIME::Base64;
my ($port, $ca, $user, $password, $rcpt) = @ARGV;
my $smtp = Net::SMTP->new("localhost", Port => $port, SSL => 1, SSL_ca_file => $ca, Hello => "perl",
                          Timeout => 30) or die "connect: $@\n";
$smtp->supports("CHUNKING") or die "no CHUNKING in EHLO\n";
${*$smtp}{"net_smtp_chunking"} = 1;
$smtp->command("AUTH PLAIN " . encode_base64("\0$user\0$password", ""))->response() == 2
    or die "auth: " . $smtp->message;
$smtp->mail($user) or die "mail: " . $smtp->message;
$smtp->to($rcpt) or die "rcpt: " . $smtp->message;
$smtp->bdat("Subject: chunked by Net::SMTP\r\n\r\n") or die "bdat: " . $smtp->message;
$smtp->bdat(".a line with a leading dot\r\n.\r\n") or die "bdat: " . $smtp->message;
print "chunk: ", $smtp->code, " ", $smtp->message;
$smtp->bdatlast("the end\r\n") or die "bdat last: " . $smtp->message;
print "last: ", $smtp->code, " ", $smtp->message;
$smtp->quit;
"""


@test
def perl_net_smtp_sends_with_bdat(lab):
    if not shutil.which("perl"):
        raise Skip("perl is not installed")
    if subprocess.run(["perl", "-MIO::Socket::SSL", "-MNet::SMTP", "-e", "1"], capture_output=True).returncode:
        raise Skip("Perl's IO::Socket::SSL is missing: apt-get install libio-socket-ssl-perl (make test-deps)")
    with Server(lab, "senderserver", args=["--verbose"]) as server:
        ana = register(lab, server.port, "ana")
        register(lab, server.port, "bob")
        out = subprocess.run(["perl", "-e", PERL_CLIENT, str(server.port), lab.ca, "ana@447.edu", ana, "bob@447.edu"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "chunk: 250 2.0.0 Ok: 31 octets received, 64 in all" in out.stdout and "last: 250 2.0.0 Ok: queued as " in out.stdout, out.stdout + out.stderr
        stored = messages(server.db, "bob@447.edu")
        assert [s for s, _ in stored] == ["chunked by Net::SMTP"]
        raw = stored[0][1].decode()
        # No dot-stuffing in BDAT: the dots are the message's own.
        assert raw.endswith("\r\n\r\n.a line with a leading dot\r\n.\r\nthe end\r\n"), raw
        log = server.log_text()
        assert "C: BDAT 33" in log and "C: BDAT 9 LAST" in log and "octets of BDAT data" in log, log


def plain(user, password):
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@test
def bdat_raw_chunks_split_pipelined_and_refused(lab):
    with Server(lab, "senderserver", settings={"smtp.maxMessageSize": "4096"}) as server:
        ana = register(lab, server.port, "ana")
        register(lab, server.port, "bob")
        c = Conversation(lab, server.port)
        c.send("EHLO raw\r\n")
        ehlo = c.reply()
        assert "250-CHUNKING" in ehlo and not any("BINARYMIME" in line for line in ehlo), ehlo
        assert c.cmd("AUTH PLAIN " + plain("ana@447.edu", ana)).startswith("235")
        # A whole transaction in one write, the chunk holding what DATA would take as its end and a
        # command; then a chunk split over three writes, one byte at a time at the seams.
        body = b"Subject: raw chunks\r\n\r\n.\r\nQUIT\r\n\x00\xff binary-ish\r\n"
        c.send(b"MAIL FROM:<ana@447.edu>\r\nRCPT TO:<bob@447.edu>\r\nBDAT %d\r\n" % len(body) + body)
        assert c.reply()[-1].startswith("250 2.1.0")
        assert c.reply()[-1].startswith("250 2.1.5")
        assert c.reply()[-1] == f"250 2.0.0 Ok: {len(body)} octets received, {len(body)} in all"
        last = b"the last chunk\r\n"
        wire = b"BDAT %d LAST\r\n" % len(last) + last
        for part in (wire[:5], wire[5:6], wire[6:20], wire[20:]):
            c.send(part)
        assert c.reply()[-1].startswith("250 2.0.0 Ok: queued as ")
        # Over the limit: the chunk is read all the same, refused 552, and the NOOP after it is a NOOP.
        assert c.cmd("MAIL FROM:<ana@447.edu>").startswith("250")
        assert c.cmd("RCPT TO:<bob@447.edu>").startswith("250")
        c.send(b"BDAT 5000 LAST\r\n" + b"NOOP\r\n" * 833 + b"xy" + b"NOOP\r\n")
        assert c.reply()[-1].startswith("552 5.3.4 ")
        assert c.reply()[-1] == "250 2.0.0 Ok"
        assert c.cmd("BDAT ten").startswith("501 5.5.4")
        c.send(b"BDAT 3 LAST\r\nabc")
        assert c.reply()[-1] == "503 5.5.1 Bad sequence of commands: need MAIL first"
        assert c.cmd("QUIT").startswith("221")
        c.close()
        stored = messages(server.db, "bob@447.edu")
        assert [s for s, _ in stored] == ["raw chunks"]
        raw = stored[0][1]
        assert raw.endswith(body + last), raw
