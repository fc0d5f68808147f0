// senderclient: the lab's SMTP client. Interactive (a menu of HELO, EHLO, AUTH, MAIL FROM, RCPT TO,
// DATA, RSET, NOOP, HELP, QUIT with prompts, line editing and history) or scripted (--to/--user:
// one message, or a registration, without prompts; non-zero exit on failure).
#include "smtp_client.h"
#include "smtp_syntax.h"

#include "../common/app_support.h"
#include "../common/client_support.h"
#include "../common/tls.h"

#include <Poco/Net/NetException.h>
#include <Poco/Net/DNS.h>
#include <Poco/Util/Application.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionSet.h>


#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

namespace maillab {
namespace {

using Poco::Util::Option;
using Poco::Util::OptionSet;
using smtp::ServerReply;
using smtp::SmtpClient;

enum ExitCode { kOk = 0, kRefused = 1, kUsage = 2, kConnection = 3 };

class SenderClient : public Poco::Util::Application {
protected:
    void defineOptions(OptionSet& options) override {
        Application::defineOptions(options);
        addClientOptions(options, "implicit (default), starttls or off, as the server runs");
        auto add = [&](const char* name, const char* description, const char* argument) {
            Option option(name, "", description);
            option.required(false).repeatable(false).argument(argument).binding(std::string("client.") + name);
            options.addOption(option);
        };
        add("user", "log in as EMAIL; without --password an unknown lab address registers", "EMAIL");
        add("password", "password for --user", "PASSWORD");
        add("to", "send one message to these recipients (comma-separated)", "LIST");
        add("subject", "subject of the message", "TEXT");
        add("body-file", "file holding the message body ('-' = standard input)", "FILE");
    }

    void handleOption(const std::string& name, const std::string& value) override {
        Application::handleOption(name, value);
        if (name == "help") {
            printHelp(options(), commandName(),
                      "The maillab SMTP client (implicit TLS 1.3). With no --user/--to it is interactive.", "");
            stopOptionsProcessing();
            helpRequested_ = true;
        } else if (name == "verbose") {
            verbose_ = true;
        }
    }

    int main(const std::vector<std::string>&) override {
        if (helpRequested_) return kOk;
        auto& cfg = config();
        host_ = cfg.getString("client.host", "localhost");
        port_ = cfg.getInt("client.port", 9000);
        domain_ = cfg.getString("client.domain", "447.edu");
        timeout_ = cfg.getInt("client.timeout", 30);
        context_ = clientContext(cfg.getString("client.ca", "certs/ca.pem"), cfg.getString("client.keylog", ""));
        if (!context_) return kConnection;
        bool scripted = cfg.has("client.user") || cfg.has("client.to");
        return scripted ? runScripted() : runInteractive();
    }

private:
    std::string withDomain(const std::string& name) const { return maillab::withDomain(name, domain_); }

    SmtpClient::Trace trace() {
        if (!verbose_) return nullptr;
        return [](const std::string& direction, const std::string& text) {
            std::cerr << direction << (direction == "*" ? " " : ": ") << text << "\n";
        };
    }

    ServerReply connect(SmtpClient& client) {
        std::string serverName = config().getString("client.servername", host_);
        auto mode = smtp::parseTlsMode(config().getString("client.tls", "implicit"));
        if (!mode) throw std::runtime_error("--tls must be implicit, starttls or off");
        return client.connect(host_, port_, serverName, context_, timeout_, *mode);
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

    static std::string buildMessage(const std::string& from, const std::vector<std::string>& to,
                                    const std::string& subject, const std::string& body) {
        std::string joined;
        for (const auto& rcpt : to) joined += (joined.empty() ? "" : ", ") + rcpt;
        std::string message = "From: <" + from + ">\r\nTo: " + joined + "\r\nSubject: " + subject +
                              "\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body;
        return message;
    }

    int fail(const std::string& step, const ServerReply& reply) {
        std::cerr << "error: " << step << " refused: " << reply.code << " " << reply.text() << "\n";
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

        SmtpClient client(trace());
        try {
            ServerReply banner = connect(client);
            if (banner.code != 220) return fail("connection", banner);  // STARTTLS: its 220
            ServerReply ehlo = client.command("EHLO " + Poco::Net::DNS::hostName());
            if (ehlo.code != 250) return fail("EHLO", ehlo);
            ServerReply auth = login(client, user, cfg.getString("client.password", ""), true);
            if (auth.code != 235) return fail("AUTH", auth);
            if (!recipients.empty()) {
                std::string body;
                std::string bodyFile = cfg.getString("client.body-file", "");
                if (bodyFile == "-") {
                    std::ostringstream all;
                    all << std::cin.rdbuf();
                    body = all.str();
                } else if (!bodyFile.empty()) {
                    std::ifstream in(bodyFile, std::ios::binary);
                    if (!in) {
                        std::cerr << "error: cannot read " << bodyFile << "\n";
                        return kUsage;
                    }
                    std::ostringstream all;
                    all << in.rdbuf();
                    body = all.str();
                }
                ServerReply mail = client.command("MAIL FROM:<" + user + ">");
                if (mail.code != 250) return fail("MAIL FROM", mail);
                for (const auto& rcpt : recipients) {
                    ServerReply r = client.command("RCPT TO:<" + rcpt + ">");
                    if (r.code != 250) return fail("RCPT TO " + rcpt, r);
                }
                ServerReply data = client.command("DATA");
                if (data.code != 354) return fail("DATA", data);
                ServerReply done =
                    client.sendMessage(buildMessage(user, recipients, cfg.getString("client.subject", ""), body));
                if (done.code != 250) return fail("message", done);
                std::cout << done.code << " " << done.text() << std::endl;
            }
            client.close();
        } catch (const Poco::Exception& e) {
            std::cerr << "error: " << e.displayText() << "\n";
            return kConnection;
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            return kConnection;
        }
        return kOk;
    }

    static void show(const ServerReply& reply) {
        for (size_t i = 0; i < reply.lines.size(); ++i)
            std::cout << "S: " << reply.code << (i + 1 < reply.lines.size() ? "-" : " ") << reply.lines[i] << "\n";
    }

    static const char* nextStep(const SmtpClient& client) {
        using S = SmtpClient::State;
        switch (client.state()) {
            case S::Fresh: return "HELO (or EHLO)";
            case S::Ready: return client.authenticated() ? "MAIL FROM" : "AUTH";
            case S::Mail: return "RCPT TO";
            case S::Rcpt: return "RCPT TO (another) or DATA";
            default: return "QUIT";
        }
    }

    void printMenu() {
        std::cout << "Commands: HELO, EHLO, AUTH, MAIL FROM, RCPT TO, DATA, RSET, NOOP, HELP, QUIT\n"
                  << "  (type a command alone to be asked for what it needs, or a whole SMTP line to send it as is)\n";
    }

    int runInteractive() {
        Terminal input;
        SmtpClient client(trace());
        try {
            std::cout << "Connecting to " << host_ << ":" << port_ << " over TLS 1.3 ...\n";
            ServerReply banner = connect(client);
            std::cout << "Connected: " << (client.tlsDescription().empty() ? "PLAINTEXT, no TLS" : client.tlsDescription()) << "\n";
            show(banner);
        } catch (const Poco::Exception& e) {
            std::cerr << "error: cannot connect to " << host_ << ":" << port_ << ": " << e.displayText()
                      << "\n       (is `make senderserver PORT=" << port_ << "` running?)\n";
            return kConnection;
        } catch (const std::exception& e) {
            std::cerr << "error: " << e.what() << "\n";
            return kConnection;
        }
        printMenu();
        std::string me;
        std::vector<std::string> recipients;  // of the current transaction, for the To: header
        std::string line;
        while (client.state() != SmtpClient::State::Closed) {
            if (input.interactive()) std::cout << "next: " << nextStep(client) << "\n";
            if (!input.line("smtp> ", line, true)) break;  // Ctrl-D
            std::string trimmed = line;
            while (!trimmed.empty() && std::isspace(static_cast<unsigned char>(trimmed.back()))) trimmed.pop_back();
            std::string word = smtp::lowerCase(trimmed);
            try {
                if (word.empty()) continue;
                if (word == "menu" || word == "?") {
                    printMenu();
                } else if (word == "helo" || word == "ehlo") {
                    std::string name;
                    if (!input.line("  your name [" + Poco::Net::DNS::hostName() + "]: ", name)) break;
                    if (name.empty()) name = Poco::Net::DNS::hostName();
                    show(client.command((word == "helo" ? "HELO " : "EHLO ") + name));
                } else if (word == "auth") {
                    std::string user, password;
                    if (!input.line("  email (@" + domain_ + " is added to a bare name): ", user)) break;
                    user = withDomain(user);
                    if (!input.secret("  password (empty to register a new account): ", password)) break;
                    ServerReply reply = login(client, user, password, false);
                    show(reply);
                    if (reply.code == 235) me = user;
                    if (!smtp::registeredPassword(reply).empty())
                        std::cout << "  Registered. Keep this password: you need it next time.\n";
                } else if (word == "mail from" || word == "mail") {
                    std::string from;
                    if (!input.line("  sender [" + me + "]: ", from)) break;
                    from = from.empty() ? me : withDomain(from);
                    ServerReply reply = client.command("MAIL FROM:<" + from + ">");
                    show(reply);
                    if (reply.code == 250) recipients.clear();
                } else if (word == "rcpt to" || word == "rcpt" || word == "rctp to") {
                    std::string to;
                    if (!input.line("  recipient (@" + domain_ + " is added to a bare name): ", to)) break;
                    ServerReply reply = client.command("RCPT TO:<" + withDomain(to) + ">");
                    show(reply);
                    if (reply.code == 250) recipients.push_back(withDomain(to));
                } else if (word == "data") {
                    ServerReply go = client.command("DATA");
                    show(go);
                    if (go.code != 354) continue;
                    std::string subject, body, bodyLine;
                    input.line("  subject: ", subject);
                    std::cout << "  message, ended by a line holding only '.':\n";
                    bool complete = false;
                    while (input.line("", bodyLine)) {
                        if (bodyLine == ".") {
                            complete = true;
                            break;
                        }
                        body += bodyLine + "\r\n";
                    }
                    if (!complete) std::cout << "  (end of input: sending what was typed)\n";
                    show(client.sendMessage(buildMessage(me, recipients, subject, body)));
                    recipients.clear();
                } else if (word == "quit") {
                    show(client.command("QUIT"));
                } else if (word == "rset" || word == "noop" || word == "help") {
                    show(client.command(smtp::parseCommand(trimmed).verb));
                } else {
                    show(client.command(trimmed));  // a whole SMTP line, sent as typed
                }
            } catch (const Poco::Exception& e) {
                std::cerr << "error: " << e.displayText() << "\n";
                break;
            } catch (const std::exception& e) {
                std::cerr << "error: " << e.what() << "\n";
                break;
            }
        }
        client.close();
        std::cout << "Bye.\n";
        return kOk;
    }

    bool helpRequested_ = false;
    bool verbose_ = false;
    std::string host_, domain_;
    int port_ = 9000;
    int timeout_ = 30;
    Poco::Net::Context::Ptr context_;
};

}  // namespace
}  // namespace maillab

POCO_APP_MAIN(maillab::SenderClient)
