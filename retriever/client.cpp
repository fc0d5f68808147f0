// retrieverclient: reads a user's mail from the retriever over HTTPS (TLS 1.3, certificate and host
// name checked). Interactive (GET, HELP, QUIT) or scripted (--user/--password [--id N] [--json|--raw]).
#include "../common/app_support.h"
#include "../common/client_support.h"
#include "../common/connect.h"
#include "../common/tls.h"
#include "../common/text.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>
#include <Poco/JSON/Parser.h>
#include <Poco/Net/HTTPBasicCredentials.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/Net/SocketStream.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/SecureStreamSocket.h>
#include <Poco/StreamCopier.h>
#include <Poco/Timestamp.h>
#include <Poco/Util/Application.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/OptionException.h>
#include <Poco/Util/OptionSet.h>

#include <unistd.h>

#include <algorithm>
#include <iomanip>
#include <iostream>
#include <memory>
#include <vector>

namespace maillab {
namespace {

// Exit codes: connect.h (ClientExit), the same for both lab clients.
constexpr int kOk = kExitOk, kRefused = kExitRefused, kUsage = kExitUsage;

struct HttpResult {
    int status = 0;
    std::string reason, contentType, body;
};

// One HTTPS connection to the retriever, opened again when the server has closed an idle keep-alive.
// HTTP/1.1 is written and read with Poco's HTTPRequest/HTTPResponse over a SocketStream, because
// Poco 1.11's HTTPSClientSession cannot check a certificate name other than the host it dials
// (--servername) and cannot adopt an already connected socket.
class RetrieverConnection {
public:
    RetrieverConnection(Target target, Poco::Net::Context::Ptr context, int timeoutSeconds, bool verbose)
        : target_(std::move(target)), context_(std::move(context)), timeout_(timeoutSeconds), verbose_(verbose),
          useTls_(target_.tlsMode != "off") {}

    // Connects now (the interactive client does, before it asks for a password).
    void connect() {
        if (!socket_) open();
    }

    HttpResult get(const std::string& path, const std::string& user, const std::string& password) {
        bool reused = socket_ != nullptr && requests_ > 0;
        try {
            return attempt(path, user, password);
        } catch (const Poco::Exception&) {
            close();
            if (!reused) throw;
            return attempt(path, user, password);  // the server closed a kept-alive connection: one fresh try
        }
    }

    ~RetrieverConnection() { close(); }

private:
    void open() {
        Poco::Timestamp start;
        Poco::Net::StreamSocket plain = connectToServer(target_, Poco::Timespan(timeout_, 0));
        // One deadline for connect and handshake: the --timeout is never spent twice.
        Poco::Timespan left = Poco::Timespan(timeout_, 0) - Poco::Timespan(start.elapsed());
        plain.setReceiveTimeout(std::max(left, Poco::Timespan(0, 100000)));
        plain.setSendTimeout(Poco::Timespan(timeout_, 0));
        if (useTls_) {
            Poco::Net::StreamSocket secure = startClientTls(plain, target_, context_, left);  // chain and host name
            if (verbose_) std::cerr << "* TLS " << describeTls(secure) << "\n";
            secure.setReceiveTimeout(Poco::Timespan(timeout_, 0));
            socket_ = std::make_unique<Poco::Net::StreamSocket>(secure);
        } else {
            if (verbose_) std::cerr << "* plain HTTP, no TLS\n";
            socket_ = std::make_unique<Poco::Net::StreamSocket>(plain);
        }
        stream_ = std::make_unique<Poco::Net::SocketStream>(*socket_);
    }

    void close() {
        requests_ = 0;
        stream_.reset();
        if (socket_) {
            // We close first; the server's close is read before the socket goes (no RST in a capture).
            closeGracefully(*socket_, useTls_, 1000);
            try {
                socket_->close();
            } catch (const Poco::Exception&) {
            }
        }
        socket_.reset();
    }

    HttpResult attempt(const std::string& path, const std::string& user, const std::string& password) {
        if (!socket_) open();
        Poco::Net::HTTPRequest request(Poco::Net::HTTPRequest::HTTP_GET, path, Poco::Net::HTTPMessage::HTTP_1_1);
        request.setHost(target_.serverName, static_cast<Poco::UInt16>(target_.port));
        request.setKeepAlive(true);
        request.set("User-Agent", "maillab-retrieverclient");
        request.set("Accept", "application/json");
        for (const auto& [name, value] : extraHeaders_) request.set(name, value);
        Poco::Net::HTTPBasicCredentials(user, password).authenticate(request);
        if (verbose_) {
            std::cerr << "C: GET " << path << " HTTP/1.1\n";
            for (const auto& [name, value] : request)
                std::cerr << "C: " << name << ": " << (name == "Authorization" ? "Basic <redacted>" : value) << "\n";
        }
        request.write(*stream_);
        stream_->flush();
        Poco::Net::HTTPResponse response;
        // An SMTP server greets first: its "220 ..." is where a status line should be.
        if (stream_->peek() == '2') {
            std::string first;
            std::getline(*stream_, first);
            if (!first.empty() && first.back() == '\r') first.pop_back();
            throw ClientError(kExitProtocol, target_.host + ":" + std::to_string(target_.port) +
                                                 " is an SMTP server (it said \"" + first.substr(0, 40) +
                                                 "\"), not HTTPS. Is this the sender's port? The retriever listens on "
                                                 "9100 by default");
        }
        response.read(*stream_);  // throws on a closed connection or a malformed status line
        HttpResult result;
        result.status = response.getStatus();
        result.reason = response.getReason();
        result.contentType = response.getContentType();
        if (response.hasContentLength()) {
            result.body.resize(static_cast<size_t>(response.getContentLength64()));
            stream_->read(result.body.data(), static_cast<std::streamsize>(result.body.size()));
            if (static_cast<size_t>(stream_->gcount()) != result.body.size())
                throw Poco::Net::MessageException("response body shorter than its Content-Length");
        } else {
            Poco::StreamCopier::copyToString(*stream_, result.body);  // until the server closes
            response.setKeepAlive(false);
        }
        if (verbose_) {
            std::cerr << "S: HTTP/1.1 " << result.status << " " << result.reason << "\n";
            for (const auto& [name, value] : response) std::cerr << "S: " << name << ": " << value << "\n";
        }
        ++requests_;
        if (!response.getKeepAlive()) close();
        return result;
    }

    Target target_;
    Poco::Net::Context::Ptr context_;
    int timeout_;
    bool verbose_;
    bool useTls_;
    std::unique_ptr<Poco::Net::StreamSocket> socket_;
    std::unique_ptr<Poco::Net::SocketStream> stream_;
    int requests_ = 0;  // answered on this connection

public:
    std::vector<std::pair<std::string, std::string>> extraHeaders_;  // --header, on every request
};

std::string errorMessage(const HttpResult& r) {
    try {
        auto object = Poco::JSON::Parser().parse(r.body).extract<Poco::JSON::Object::Ptr>();
        return object->getObject("error")->getValue<std::string>("message");
    } catch (const Poco::Exception&) {
        return r.reason;
    }
}

void printList(const std::string& json, std::ostream& out) {
    auto object = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
    auto messages = object->getArray("messages");
    int64_t total = object->getValue<int64_t>("total");
    out << "Mailbox " << object->getValue<std::string>("mailbox") << ": " << total
        << (total == 1 ? " message" : " messages") << "\n";
    if (messages->size() == 0) return;
    out << std::left << std::setw(6) << "  id" << std::setw(33) << "date" << std::setw(26) << "from"
        << "subject\n";
    for (size_t i = 0; i < messages->size(); ++i) {
        auto m = messages->getObject(static_cast<unsigned>(i));
        std::string from = m->getValue<std::string>("from");
        if (from.size() > 24) from = from.substr(0, 23) + "…";
        out << "  " << std::setw(4) << m->getValue<int64_t>("id") << std::setw(33) << m->getValue<std::string>("date")
            << std::setw(26) << from << m->getValue<std::string>("subject") << "\n";
    }
    if (!object->isNull("next")) out << "  (more: " << object->getValue<std::string>("next") << ")\n";
}

void printMessage(const std::string& json, std::ostream& out) {
    auto m = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
    out << "Message " << m->getValue<int64_t>("id") << " (" << m->getValue<int64_t>("size") << " octets)\n";
    auto headers = m->getArray("headers");
    for (size_t i = 0; i < headers->size(); ++i) {
        auto h = headers->getObject(static_cast<unsigned>(i));
        std::string name = text::lowerCase(h->getValue<std::string>("name"));
        if (name == "from" || name == "to" || name == "subject" || name == "date")
            out << h->getValue<std::string>("name") << ": " << h->getValue<std::string>("value") << "\n";
    }
    out << "\n" << m->getValue<std::string>("body");
    std::string body = m->getValue<std::string>("body");
    if (!body.empty() && body.back() != '\n') out << "\n";
}

class RetrieverClient : public Poco::Util::Application {
protected:
    void defineOptions(Poco::Util::OptionSet& options) override {
        Application::defineOptions(options);
        addClientOptions(options, "implicit (HTTPS, default) or off (plain HTTP), as the server runs");
        auto add = [&](const char* name, const char* description, const char* argument) {
            Poco::Util::Option option(name, "", description);
            option.required(false).repeatable(false);
            if (argument) option.argument(argument).binding(std::string("client.") + name);
            options.addOption(option);
        };
        add("user", "read this account's mailbox", "EMAIL");
        add("password", "the account's password", "PASSWORD");
        add("id", "show one message", "N");
        add("offset", "skip this many of the newest messages in the list", "N");
        add("limit", "list at most N messages", "N");
        add("json", "print the server's JSON as is", nullptr);
        add("raw", "with --id: print the message as stored (RFC 5322)", nullptr);
        Poco::Util::Option header("header", "", "add a request header, e.g. 'If-None-Match: \"L5.3\"' (repeatable)");
        header.required(false).repeatable(true).argument("NAME: VALUE");
        options.addOption(header);
    }

    void handleOption(const std::string& name, const std::string& value) override {
        Application::handleOption(name, value);
        if (name == "help") {
            printHelp(options(), commandName(),
                      "The maillab retriever client (HTTPS on TLS 1.3). Without --user it is interactive.",
                      "Exit status: 0 done, 1 refused by the server (HTTP error), 2 usage, 3 cannot connect, 4 TLS "
                      "(certificate, --tls mismatch), 5 not an HTTP server or the server went away.");
            stopOptionsProcessing();
            helpRequested_ = true;
        } else if (name == "verbose" || name == "json" || name == "raw") {
            config().setBool("client." + name, true);
        } else if (name == "header") {
            size_t colon = value.find(':');
            if (colon == std::string::npos || colon == 0)
                throw Poco::Util::InvalidArgumentException("--header needs 'Name: value', not '" + value + "'");
            std::string headerValue = value.substr(colon + 1);
            headerValue.erase(0, headerValue.find_first_not_of(' '));
            headers_.emplace_back(value.substr(0, colon), headerValue);
        }
    }

    int main(const std::vector<std::string>&) override {
        if (helpRequested_) return kOk;
        auto& cfg = config();
        std::string host = cfg.getString("client.host", "localhost");
        int port = 0, timeout = 0;
        try {
            port = numberOption(cfg, "client.port", 9100, 1, 65535, "--port");
            timeout = numberOption(cfg, "client.timeout", 30, 1, 86400, "--timeout");
        } catch (const std::invalid_argument& e) {
            std::cerr << "error: " << e.what() << "\n";
            return kUsage;
        }
        domain_ = cfg.getString("client.domain", "447.edu");
        Target target;
        target.host = host;
        target.port = port;
        target.serverName = cfg.getString("client.servername", host);
        target.service = "http";
        target.tlsMode = cfg.getString("client.tls", "implicit");
        target.caFile = cfg.getString("client.ca", "certs/ca.pem");
        if (target.tlsMode != "implicit" && target.tlsMode != "off") {
            std::cerr << "error: --tls must be implicit (HTTPS) or off (plain HTTP), as the server runs\n";
            return kUsage;
        }
        Poco::Net::Context::Ptr context;
        if (target.tlsMode != "off") {
            context = clientContext(target.caFile, cfg.getString("client.keylog", ""), "http/1.1");
            if (!context) return kExitTls;
        }
        connection_ = std::make_unique<RetrieverConnection>(target, context, timeout,
                                                            cfg.getBool("client.verbose", false));
        connection_->extraHeaders_ = headers_;
        try {
            return cfg.has("client.user") ? runScripted() : runInteractive(host, port);
        } catch (const std::exception& e) {
            ClientError error = explainFailure(e, target);
            std::cerr << "error: " << error.what() << "\n";
            return error.code();
        }
    }

private:
    std::string withDomain(const std::string& name) const { return text::lowerCase(maillab::withDomain(name, domain_)); }

    static std::string listPath(const std::string& user, const std::string& query = "") {
        return "/mailboxes/" + user + "/messages" + query;
    }

    int runScripted() {
        auto& cfg = config();
        std::string user = withDomain(cfg.getString("client.user"));
        std::string password = cfg.getString("client.password", "");
        if (!cfg.has("client.password")) {
            if (!::isatty(STDIN_FILENO)) {
                std::cerr << "error: --user needs --password\n";
                return kUsage;
            }
            if (!terminal_.secret("password for " + user + ": ", password)) return kUsage;
        }
        std::string path;
        bool json = cfg.getBool("client.json", false);
        if (cfg.has("client.id")) {
            path = listPath(user, "/" + cfg.getString("client.id"));
            if (cfg.getBool("client.raw", false)) path += "/raw";
        } else {
            std::string query;
            if (cfg.has("client.offset")) query += "offset=" + cfg.getString("client.offset");
            if (cfg.has("client.limit")) query += std::string(query.empty() ? "" : "&") + "limit=" + cfg.getString("client.limit");
            path = listPath(user, query.empty() ? "" : "?" + query);
        }
        HttpResult r = connection_->get(path, user, password);
        if (r.status == 304) {  // asked with If-None-Match or If-Modified-Since: the copy is current
            std::cout << "304 Not Modified: your copy is still current (no body sent)\n";
            return kOk;
        }
        if (r.status != 200) {
            if (json) std::cout << r.body << "\n";
            std::cerr << "error: " << r.status << " " << r.reason << ": " << errorMessage(r) << "\n";
            return kRefused;
        }
        if (json || cfg.getBool("client.raw", false)) std::cout << r.body << (r.body.empty() || r.body.back() == '\n' ? "" : "\n");
        else if (cfg.has("client.id")) printMessage(r.body, std::cout);
        else printList(r.body, std::cout);
        return kOk;
    }

    int runInteractive(const std::string& host, int port) {
        std::cout << "maillab retriever client for " << (config().getString("client.tls", "implicit") == "off" ? "http" : "https")
                  << "://" << host << ":" << port << "/\n"
                  << "Commands: GET (read a mailbox), HELP, QUIT. Ctrl-D quits.\n";
        connection_->connect();  // a server that is not there is said now, before any password is asked
        std::cout << "Connected.\n";
        std::string line;
        while (terminal_.line("http> ", line, true)) {
            std::string word = text::lowerCase(line);
            while (!word.empty() && word.back() == ' ') word.pop_back();
            if (word.empty()) continue;
            if (word == "quit" || word == "exit") break;
            if (word == "help" || word == "?") {
                std::cout << "GET   asks for your address and password, lists your mail, and opens a message\n"
                             "QUIT  leaves\n";
                continue;
            }
            if (word != "get") {
                std::cout << "Unknown command " << line << "; try GET, HELP or QUIT\n";
                continue;
            }
            std::string user;
            if (!terminal_.line("  email (@" + domain_ + " is added to a bare name): ", user)) break;
            user = withDomain(user);
            std::string password;
            if (!terminal_.secret("  password: ", password)) break;
            HttpResult r = connection_->get(listPath(user), user, password);
            std::cout << "HTTP " << r.status << " " << r.reason << "\n";
            if (r.status != 200) {
                std::cout << "  " << errorMessage(r) << "\n";
                continue;
            }
            printList(r.body, std::cout);
            std::string id;
            while (terminal_.line("  open message id (Enter to go back): ", id) && !id.empty()) {
                HttpResult m = connection_->get(listPath(user, "/" + id), user, password);
                if (m.status != 200) std::cout << "HTTP " << m.status << " " << m.reason << ": " << errorMessage(m) << "\n";
                else printMessage(m.body, std::cout);
            }
        }
        std::cout << "Bye.\n";
        return kOk;
    }

    bool helpRequested_ = false;
    std::vector<std::pair<std::string, std::string>> headers_;
    Terminal terminal_;
    std::string domain_;
    std::unique_ptr<RetrieverConnection> connection_;
};

}  // namespace
}  // namespace maillab

MAILLAB_CLIENT_MAIN(maillab::RetrieverClient)
