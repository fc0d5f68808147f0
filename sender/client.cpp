// senderclient: the lab's SMTP client. Interactive (a menu of HELO, EHLO, AUTH, MAIL FROM, RCPT TO,
// DATA, RSET, NOOP, HELP, QUIT with prompts, line editing and history) or scripted (--to/--user:
// one message, or a registration, without prompts; non-zero exit on failure). Files are attached
// with --attach or the menu's `attach` (compose.h writes the MIME).
#include "compose.h"
#include "smtp_client.h"
#include "smtp_syntax.h"
#include "../common/net/text.h"

#include "../common/lab/app_support.h"
#include "../common/lab/client_support.h"
#include "../common/net/connect.h"
#include "../common/net/tls.h"

#include <Poco/Net/NetException.h>
#include <Poco/Net/DNS.h>
#include <Poco/Util/Application.h>


#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace maillab {
namespace {

using smtp::ServerReply;
using smtp::SmtpClient;
using namespace smtp::replies;

// Exit codes: connect.h (ClientExit), the same for both lab clients.
constexpr int kOk = kExitOk, kRefused = kExitRefused, kUsage = kExitUsage;

class SenderClient : public ClientApplication {
public:
    SenderClient()
        : ClientApplication("implicit (default), starttls or off, as the server runs",
                            "The maillab SMTP client (implicit TLS 1.3). With no --user/--to it is interactive.",
                            "Exit status: 0 done, 1 refused by the server, 2 usage, 3 cannot connect, 4 TLS "
                            "(certificate, --tls mismatch), 5 not an SMTP server or the server went away.",
                            {{"user", "log in as EMAIL; without --password an unknown lab address registers", "EMAIL"},
                             {"password", "password for --user", "PASSWORD"},
                             {"to", "send one message to these recipients (comma-separated)", "LIST"},
                             {"subject", "subject of the message", "TEXT"},
                             {"body-file", "file holding the message body ('-' = standard input)", "FILE"},
                             {"greeting-timeout", "seconds to wait for the server's 220 greeting (default 5)", "SECONDS"},
                             {"attach", "attach FILE to the message (repeatable)", "FILE", kRepeatable}}) {}

protected:
    void handleOption(const std::string& name, const std::string& value) override {
        ClientApplication::handleOption(name, value);
        if (name == "verbose") {
            verbose_ = true;
        } else if (name == "attach") {
            attachPaths_.push_back(value);
        }
    }

    int main(const std::vector<std::string>&) override {
        if (helpRequested()) return kOk;
        auto& cfg = config();
        try {
            ClientSettings common = settings(9000, "smtp");
            target_ = common.target;
            timeout_ = common.timeout;
            domain_ = common.domain;
            greeting_ = numberOption(cfg, "client.greeting-timeout", 5, 1, 3600, "--greeting-timeout");
        } catch (const std::invalid_argument& e) {
            std::cerr << "error: " << e.what() << "\n";
            return kUsage;
        }
        auto mode = smtp::parseTlsMode(target_.tlsMode);
        if (!mode) {
            std::cerr << "error: --tls must be implicit, starttls or off (the same as the server's)\n";
            return kUsage;
        }
        mode_ = *mode;
        if (mode_ != smtp::TlsMode::Off) {
            context_ = clientContext(target_.caFile, cfg.getString("client.keylog", ""), "smtp");
            if (!context_) return kExitTls;
        }
        bool scripted = cfg.has("client.user") || cfg.has("client.to");
        return scripted ? runScripted() : runInteractive();
    }

private:
    std::string withDomain(const std::string& name) const { return maillab::withDomain(name, domain_); }

    SmtpClient::Trace trace() {
        if (!verbose_) return nullptr;
        return [](const std::string& direction, const std::string& text) {
            std::cerr << direction << (direction == "*" ? " " : ": ") << escapeControl(text) << "\n";
        };
    }

    // Prints a failure as one line and returns its exit code.
    int failed(const std::exception& e) {
        ClientError error = explainFailure(e, target_);
        std::cerr << "error: " << error.what() << "\n";
        return error.code();
    }

    // AUTH PLAIN with the initial response; `announce` prints a registration's password on a line
    // of its own (`password: NNNNNNNN`) for scripts.
    ServerReply login(SmtpClient& client, const std::string& user, const std::string& password, bool announce) {
        ServerReply reply =
            client.command("AUTH PLAIN " + smtp::plainCredentials(user, password), "AUTH PLAIN <credentials>");
        std::string newPassword = smtp::registeredPassword(reply);
        if (announce && !newPassword.empty()) std::cout << "password: " << newPassword << std::endl;
        return reply;
    }

    // What the message's headers will say, as a lesson: RFC 2047 words and MIME parts are what
    // travel; a mail reader turns them back.
    static void explainEncoding(const smtp::Draft& draft) {
        if (std::string wire = smtp::encodedSubject(draft.subject); wire != draft.subject)
            std::cout << "  (the subject is not ASCII: it travels as RFC 2047 encoded words: Subject: " << wire << ")\n";
        for (const auto& file : draft.attachments)
            std::cout << "  (attachment " << file.fileName << ": " << file.contentType << ", " << file.bytes.size()
                      << " bytes, sent base64-encoded in a MIME part of its own, RFC 2045)\n";
    }

    int fail(const std::string& step, const ServerReply& reply) {
        std::cerr << "error: " << step << " refused: " << reply.code << " " << reply.text() << "\n";
        if (reply.code == AuthRequired.code && reply.text().find("STARTTLS") != std::string::npos)
            std::cerr << "       (the server runs with --tls starttls: run this client with --tls starttls too)\n";
        return kRefused;
    }

    int runScripted() {
        auto& cfg = config();
        std::string user = withDomain(cfg.getString("client.user", ""));
        if (user.empty()) {
            std::cerr << "error: --to needs --user\n";
            return kUsage;
        }
        std::vector<std::string> recipients;
        std::istringstream list(cfg.getString("client.to", ""));
        for (std::string item; std::getline(list, item, ',');)
            if (!withDomain(item).empty()) recipients.push_back(withDomain(item));

        // The message's files are read before connecting: a typo in a path costs no login (and no
        // registration of a new account that then sends nothing).
        smtp::Draft draft{user, recipients, cfg.getString("client.subject", ""), "", {}};
        if (!recipients.empty()) {
            std::string bodyFile = cfg.getString("client.body-file", "");
            if (bodyFile == "-") {
                std::ostringstream all;
                all << std::cin.rdbuf();
                draft.body = all.str();
            } else if (!bodyFile.empty()) {
                std::ifstream in(bodyFile, std::ios::binary);
                if (!in) {
                    std::cerr << "error: cannot read --body-file " << bodyFile << ": check the path\n";
                    return kUsage;
                }
                std::ostringstream all;
                all << in.rdbuf();
                draft.body = all.str();
            }
            for (const auto& path : attachPaths_) {
                try {
                    draft.attachments.push_back(smtp::readAttachment(path));
                } catch (const std::runtime_error& e) {
                    std::cerr << "error: " << e.what() << "\n";
                    return kUsage;
                }
            }
        }

        SmtpClient client(trace());
        try {
            ServerReply banner = client.connect(target_, context_, timeout_, greeting_, mode_);
            if (banner.code != ServiceReady.code) return fail("connection", banner);
            if (mode_ == smtp::TlsMode::StartTls) {
                std::vector<ServerReply> upgrade = client.startTls(Poco::Net::DNS::hostName());
                if (upgrade.back().code != ReadyToStartTls.code) return fail("STARTTLS", upgrade.back());
            }
            ServerReply ehlo = client.command("EHLO " + Poco::Net::DNS::hostName());
            if (ehlo.code != Ok.code) return fail("EHLO", ehlo);
            const std::string password = cfg.getString("client.password", "");
            ServerReply auth = login(client, user, password, true);
            if (auth.code != AuthSucceeded.code) {
                int status = fail("AUTH", auth);
                // No --password asks to register; the server says the same whether or not the account
                // exists (nobody learns which names are taken), so the client says what to try.
                if (password.empty() && auth.code == AuthInvalid.code &&
                    auth.text().find("credentials invalid") != std::string::npos)  // not a role or foreign address
                    std::cerr << "       (without --password the client registers " << user
                              << "; if it is registered already, give its password: --password NNNNNNNN)\n";
                return status;
            }
            if (!recipients.empty()) {
                ServerReply mail = client.command("MAIL FROM:<" + user + ">");
                if (mail.code != SenderOk.code) return fail("MAIL FROM", mail);
                for (const auto& rcpt : recipients) {
                    ServerReply r = client.command("RCPT TO:<" + rcpt + ">");
                    if (r.code != RecipientOk.code) return fail("RCPT TO " + rcpt, r);
                }
                ServerReply data = client.command("DATA");
                if (data.code != StartMailInput.code) return fail("DATA", data);
                ServerReply done = client.sendMessage(smtp::composeMessage(draft));
                if (done.code != Ok.code) return fail("message", done);
                std::cout << done.code << " " << done.text() << std::endl;
            }
            client.close();
        } catch (const std::exception& e) {
            return failed(e);
        }
        return kOk;
    }

    static void show(const ServerReply& reply) {
        for (size_t i = 0; i < reply.lines.size(); ++i)
            std::cout << "S: " << reply.code << (i + 1 < reply.lines.size() ? "-" : " ") << escapeControl(reply.lines[i])
                      << "\n";
    }

    static const char* nextStep(const SmtpClient& client) {
        using S = SmtpClient::State;
        switch (client.state()) {
            case S::Fresh: return "HELO (or EHLO)";
            case S::Ready: return client.authenticated() ? "MAIL FROM (or QUIT)" : "AUTH";
            case S::Mail: return "RCPT TO";
            case S::Rcpt: return "RCPT TO (another) or DATA";
            default: return "QUIT";
        }
    }

    void printMenu() {
        std::cout << "Commands: HELO, EHLO, AUTH, MAIL FROM, RCPT TO, DATA, RSET, NOOP, HELP, QUIT; ATTACH (a file, "
                     "sent with the next message)\n"
                  << "  (type a command alone to be asked for what it needs, or a whole SMTP line to send it as is)\n";
    }

    // What the session's end means for the student, after a 421 or a lost connection.
    void explainClosed(const ServerReply& last) {
        if (last.code != kServiceNotAvailable) return;
        std::cout << "The server closed the session (421): " << last.text() << "\n";
        if (last.text().rfind("4.4.2", 0) == 0)  // RFC 3463 X.4.2: the server's timeout, it is still running
            std::cout << "  It waited too long for you (the server's sender.timeout.* settings; the server is"
                         " still running): run the client again to reconnect.\n";
        else
            std::cout << "  If it was stopped, start it again with " << startCommand(target_) << " and reconnect.\n";
    }

    int connectInteractive(SmtpClient& client) {
        bool plain = mode_ != smtp::TlsMode::Implicit;
        std::cout << "Connecting to " << target_.host << ":" << target_.port
                  << (mode_ == smtp::TlsMode::Implicit ? " over TLS 1.3 (implicit TLS) ...\n"
                      : mode_ == smtp::TlsMode::StartTls ? " in plaintext; STARTTLS will upgrade to TLS 1.3 ...\n"
                                                        : " in PLAINTEXT (--tls off): everything typed crosses the wire readable ...\n");
        ServerReply banner = client.connect(target_, context_, timeout_, greeting_, mode_);
        std::cout << (plain ? "Connected (plaintext, no TLS yet)\n" : "Connected: " + client.tlsDescription() + "\n");
        show(banner);
        if (banner.code != ServiceReady.code) {
            explainClosed(banner);
            return kRefused;
        }
        if (mode_ == smtp::TlsMode::StartTls) {
            std::cout << "Upgrading with STARTTLS (RFC 3207):\n";
            std::string name = Poco::Net::DNS::hostName();
            std::cout << "C: EHLO " << name << "\n";
            std::vector<ServerReply> replies = client.startTls(name);
            show(replies[0]);
            std::cout << "C: STARTTLS\n";
            show(replies.back());
            if (replies.back().code != ReadyToStartTls.code) return kRefused;
            std::cout << "TLS is up: " << client.tlsDescription()
                      << "\n  The server forgot everything said in clear: say EHLO again (RFC 3207 4.2).\n";
        }
        return kOk;
    }

    int runInteractive() {
        Terminal input;
        SmtpClient client(trace());
        try {
            if (int rc = connectInteractive(client)) return rc;
        } catch (const std::exception& e) {
            return failed(e);
        }
        printMenu();
        std::string me;                                // the account logged in with the menu's AUTH
        std::vector<smtp::Attachment> attachments;  // for the next message
        std::string line;
        int rc = kOk;
        ServerReply last;
        auto exchange = [&](const std::string& commandLine, const std::string& logAs = "") {
            last = client.command(commandLine, logAs);
            show(last);
            return last;
        };
        while (client.state() != SmtpClient::State::Closed) {
            if (input.interactive()) std::cout << "next: " << nextStep(client) << "\n";
            Terminal::watch(client.descriptor());
            bool typed = input.line("smtp> ", line, true);
            Terminal::watch(-1);
            if (!typed && Terminal::serverSpoke()) {
                try {
                    ServerReply spoken = client.unsolicited(1000);
                    if (spoken.code == 0) continue;
                    last = spoken;
                    show(spoken);
                } catch (const std::exception& e) {
                    rc = failed(e);
                }
                break;
            }
            if (!typed) {
                // Ctrl-D or Ctrl-C: leave politely, and show it (RFC 5321 4.1.1.10).
                try {
                    std::cout << (Terminal::interrupted() ? "Interrupted: " : "End of input: ") << "saying QUIT\nC: QUIT\n";
                    exchange("QUIT");
                } catch (const std::exception& e) {
                    rc = failed(e);
                }
                break;
            }
            std::string trimmed = line;
            while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) trimmed.pop_back();
            while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.front()))) trimmed.erase(trimmed.begin());
            std::string word = text::lowerCase(trimmed);
            try {
                if (word.empty()) continue;
                if (word == "menu" || word == "?") {
                    printMenu();
                } else if (word == "helo" || word == "ehlo") {
                    std::string name;
                    if (!input.line("  your name [" + Poco::Net::DNS::hostName() + "]: ", name)) continue;
                    if (name.empty()) name = Poco::Net::DNS::hostName();
                    exchange((word == "helo" ? "HELO " : "EHLO ") + name);
                } else if (word == "auth") {
                    const char* oneLogin = "  (one login per session: QUIT and run the client again, or open a second "
                                           "terminal, to log in or register as someone else)\n";
                    if (client.authenticated()) {
                        // RFC 4954 4: a second AUTH is refused before any credentials, so none are asked
                        // for: the server's own 503 shows it.
                        if (exchange("AUTH PLAIN").code == BadSequence.code) std::cout << oneLogin;
                        continue;
                    }
                    std::string user, password;
                    if (!input.line("  email (@" + domain_ + " is added to a bare name): ", user)) continue;
                    user = withDomain(user);
                    if (!input.secret("  password (empty to register a new account): ", password)) continue;
                    ServerReply reply = login(client, user, password, false);
                    show(reply);
                    last = reply;
                    if (reply.code == AuthSucceeded.code) me = user;
                    if (reply.code == BadSequence.code) std::cout << oneLogin;
                    if (!smtp::registeredPassword(reply).empty())
                        std::cout << "  Registered. Keep this password: you need it next time.\n";
                } else if (word == "mail from" || word == "mail") {
                    std::string from;
                    if (me.empty() && client.authenticated()) me = withDomain(client.user());  // a raw AUTH line
                    if (!input.line("  sender [" + me + "]: ", from)) continue;
                    from = from.empty() ? me : withDomain(from);
                    exchange("MAIL FROM:<" + from + ">");
                } else if (word == "rcpt to" || word == "rcpt") {
                    std::string to;
                    if (!input.line("  recipient (@" + domain_ + " is added to a bare name): ", to)) continue;
                    exchange("RCPT TO:<" + withDomain(to) + ">");
                } else if (word == "attach") {
                    std::string path;
                    if (!input.line("  file to attach: ", path) || path.empty()) continue;
                    try {
                        attachments.push_back(smtp::readAttachment(path));
                        const auto& file = attachments.back();
                        std::cout << "  attached " << file.fileName << " (" << file.contentType << ", "
                                  << file.bytes.size() << " bytes): it goes with the next message\n";
                    } catch (const std::runtime_error& e) {
                        std::cout << "  " << e.what() << "\n";
                    }
                } else if (word == "data") {
                    // Without a recipient the server refuses DATA: let it say so before anything is typed.
                    if (client.state() != SmtpClient::State::Rcpt) {
                        exchange("DATA");
                        continue;
                    }
                    // The message is typed first and DATA sent after it, so that Ctrl-C can still
                    // abandon it: once DATA is accepted, whatever the client sends is the message.
                    smtp::Draft draft{withDomain(client.envelopeFrom()), {}, "", "", attachments};
                    for (const auto& rcpt : client.envelopeRecipients()) draft.to.push_back(withDomain(rcpt));
                    std::string bodyLine;
                    bool complete = input.line("  subject: ", draft.subject);
                    // "Subject: x" typed at the prompt is the subject x.
                    if (text::lowerCase(draft.subject.substr(0, 8)) == "subject:") {
                        draft.subject.erase(0, 8);
                        while (!draft.subject.empty() && draft.subject.front() == ' ') draft.subject.erase(0, 1);
                    }
                    if (complete) {
                        std::cout << "  message, ended by a line holding only '.' (Ctrl-C abandons it):\n";
                        complete = false;
                        while (input.line("", bodyLine)) {
                            if (bodyLine == ".") {
                                complete = true;
                                break;
                            }
                            draft.body += bodyLine + "\r\n";
                        }
                    }
                    if (Terminal::interrupted()) {
                        Terminal::clearInterrupt();
                        std::cout << "Message abandoned (Ctrl-C): nothing was sent. Clearing the envelope:\nC: RSET\n";
                        exchange("RSET");
                        continue;
                    }
                    if (!complete) std::cout << "  (end of input: sending what was typed)\n";
                    explainEncoding(draft);
                    std::cout << "C: DATA\n";
                    if (exchange("DATA").code != StartMailInput.code) continue;
                    std::cout << "C: <the message: headers, a blank line, the text" << (draft.attachments.empty() ? "" : ", the MIME parts")
                              << ">\nC: .\n";
                    last = client.sendMessage(smtp::composeMessage(draft));
                    show(last);
                    if (last.code == Ok.code) attachments.clear();
                } else if (word == "rset" || word == "noop" || word == "help" || word == "quit") {
                    exchange(smtp::parseCommand(trimmed).verb);
                } else {
                    exchange(trimmed);  // a whole SMTP line, sent as typed; the server says if it is a typo
                }
            } catch (const std::exception& e) {
                rc = failed(e);
                break;
            }
        }
        explainClosed(last);
        client.close();
        std::cout << "Bye.\n";
        return rc;
    }

    std::vector<std::string> attachPaths_;  // --attach, in order
    bool verbose_ = false;
    std::string domain_;
    int timeout_ = 30;
    int greeting_ = 5;
    smtp::TlsMode mode_ = smtp::TlsMode::Implicit;
    Target target_;
    Poco::Net::Context::Ptr context_;
};

}  // namespace
}  // namespace maillab

MAILLAB_CLIENT_MAIN(maillab::SenderClient)
