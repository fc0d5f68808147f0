// retrieverclient: reads a user's mail from the retriever over HTTPS (TLS 1.3, certificate and host
// name checked). Interactive (GET, HELP, QUIT) or scripted (--user/--password [--id N] [--json|--raw]
// [--save-attachments DIR]). A message is shown as the server decoded it (MIME: subject, addresses,
// text, attachments); --raw shows it as sent.
#include "../common/lab/app_support.h"
#include "../common/lab/client_support.h"
#include "../common/net/connect.h"
#include "../common/net/tls.h"
#include "../common/net/text.h"
#include "mime_view.h"

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
#include <Poco/Util/OptionException.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
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
        while (response.getStatus() < 200) {  // RFC 9110 15.2: a 1xx is interim, the final answer follows
            response.clear();
            response.read(*stream_);
        }
        HttpResult result;
        result.status = response.getStatus();
        result.reason = response.getReason();
        result.contentType = response.getContentType();
        // RFC 9112 6.3: a 204 or 304 ends at its head, whatever its header fields say.
        const bool noBody = result.status == 204 || result.status == 304;
        if (!noBody && response.hasContentLength()) {
            result.body.resize(static_cast<size_t>(response.getContentLength64()));
            stream_->read(result.body.data(), static_cast<std::streamsize>(result.body.size()));
            if (static_cast<size_t>(stream_->gcount()) != result.body.size())
                throw Poco::Net::MessageException("response body shorter than its Content-Length");
        } else if (!noBody) {
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

// What the server sent is shown on a terminal: no escape sequences (text::validUtf8 makes them U+FFFD).
std::string shown(const Poco::JSON::Object::Ptr& object, const std::string& key) {
    return object->has(key) && !object->isNull(key) ? text::validUtf8(object->getValue<std::string>(key)) : "";
}

// A body as it came (--raw, --json, GET /path): exact bytes into a file or a pipe; on a terminal,
// escape sequences a sender put in a message would act on it, so they are shown as U+FFFD there.
void printBody(const std::string& body, std::ostream& out) {
    out << (::isatty(STDOUT_FILENO) ? text::validUtf8(body) : body) << (body.empty() || body.back() == '\n' ? "" : "\n");
}

// True unless every address the header From shows (as the server shows it: "Name <address>", an
// address, or a list of them) is the account that logged in and sent the message: anyone can type
// any From line (RFC 5322 3.6.2); only the authenticated sender is the server's word. Every word
// with an "@" counts, display names' too ("ana@447.edu" <eve@447.edu> shows ana's address first),
// and a From with no address at all is not the sender either.
bool fromIsNotTheSender(const Poco::JSON::Object::Ptr& m) {
    std::string sender = text::lowerCase(shown(m, "authenticated_sender"));
    if (sender.empty()) return false;
    std::string from = text::lowerCase(shown(m, "from"));
    bool any = false;
    for (size_t at = from.find('@'); at != std::string::npos; at = from.find('@', at + 1)) {
        const char* stops = " \t<>\",;:()[]";
        size_t start = from.find_last_of(stops, at);
        start = start == std::string::npos ? 0 : start + 1;
        size_t end = from.find_first_of(stops, at);
        if (from.compare(start, (end == std::string::npos ? from.size() : end) - start, sender) != 0) return true;
        any = true;
    }
    return !any;
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
    bool marked = false;
    for (size_t i = 0; i < messages->size(); ++i) {
        auto m = messages->getObject(static_cast<unsigned>(i));
        std::string from = shown(m, "from");
        if (fromIsNotTheSender(m)) {
            from = "! " + from;
            marked = true;
        }
        if (from.size() > 24) {
            size_t cut = 23;
            while (cut > 0 && (static_cast<unsigned char>(from[cut]) & 0xC0) == 0x80) --cut;  // not inside a character
            from = from.substr(0, cut) + "…";
        }
        // Padded by characters, not octets (setw counts octets: a UTF-8 name or the "…" closed the gap).
        size_t columns = 0;
        for (unsigned char c : from) columns += (c & 0xC0) != 0x80;
        from.append(columns < 26 ? 26 - columns : 1, ' ');
        out << "  " << std::setw(4) << m->getValue<int64_t>("id") << std::setw(33) << m->getValue<std::string>("date")
            << from << shown(m, "subject") << "\n";
    }
    if (!object->isNull("next")) out << "  (more: " << object->getValue<std::string>("next") << ")\n";
    if (marked) out << "  ! its From line is not the account that sent it: open it to see who did\n";
}

// "1.2 MB" for people.
std::string humanSize(int64_t octets) {
    if (octets < 1024) return std::to_string(octets) + (octets == 1 ? " byte" : " bytes");
    std::ostringstream out;
    out << std::fixed << std::setprecision(1) << (octets < 1024 * 1024 ? octets / 1024.0 : octets / (1024.0 * 1024.0))
        << (octets < 1024 * 1024 ? " KB" : " MB");
    return out.str();
}

// One message as the server decoded it: the header fields people read, its attachments, its text.
void printMessage(const std::string& json, std::ostream& out) {
    auto m = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
    out << "Message " << m->getValue<int64_t>("id") << " (" << m->getValue<int64_t>("size") << " octets)\n";
    out << "From: " << shown(m, "from") << "\n";
    if (fromIsNotTheSender(m))
        out << "Sent by: " << shown(m, "authenticated_sender")
            << "  <- the account that logged in and sent it; the From line above is only what it typed\n";
    out << "To: " << shown(m, "to") << "\n";
    if (m->has("cc")) out << "Cc: " << shown(m, "cc") << "\n";
    out << "Subject: " << shown(m, "subject") << "\n";
    out << "Date: " << shown(m, "date") << "\n";
    if (m->has("attachments")) {
        auto attachments = m->getArray("attachments");
        for (size_t i = 0; i < attachments->size(); ++i) {
            auto a = attachments->getObject(static_cast<unsigned>(i));
            if (i == 0) out << "Attachments:\n";
            std::string name = shown(a, "name");
            out << "  [" << a->getValue<int64_t>("index") << "] " << (name.empty() ? "(no name)" : name) << " ("
                << shown(a, "type") << ", " << humanSize(a->getValue<int64_t>("size")) << ")\n";
        }
    }
    if (m->has("mime_problems")) {
        auto problems = m->getArray("mime_problems");
        for (size_t i = 0; i < problems->size(); ++i)
            out << "Note: " << text::validUtf8(problems->getElement<std::string>(static_cast<unsigned>(i))) << "\n";
    }
    if (shown(m, "body_type") == "text/html") out << "(HTML message, shown as its text)\n";
    std::string body = shown(m, "body");
    out << "\n" << body;
    if (!body.empty() && body.back() != '\n') out << "\n";
}

// Writes `bytes` as a new file in the directory `dirFd`, named `name` (already mime::safeFileName:
// one path component, no dots first) or, when that exists, "name (1).ext", "name (2).ext", ...
// O_EXCL and O_NOFOLLOW: nothing is overwritten, no symbolic link is followed out of the directory.
std::string saveNew(int dirFd, const std::string& name, const std::string& bytes) {
    size_t dot = name.rfind('.');
    std::string stem = dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
    std::string extension = dot == std::string::npos || dot == 0 ? "" : name.substr(dot);
    constexpr int kMaxSuffix = 999;  // then the folder has more copies than anyone wants
    for (int n = 0; n <= kMaxSuffix; ++n) {
        std::string candidate = n == 0 ? name : stem + " (" + std::to_string(n) + ")" + extension;
        int fd = ::openat(dirFd, candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd < 0) throw ClientError(kExitUsage, "cannot create " + candidate + ": " + std::strerror(errno));
        size_t written = 0;
        while (written < bytes.size()) {
            ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                std::string why = std::strerror(errno);
                ::close(fd);
                throw ClientError(kExitUsage, "cannot write " + candidate + ": " + why);
            }
            written += static_cast<size_t>(n);
        }
        if (::close(fd) != 0) throw ClientError(kExitUsage, "cannot write " + candidate + ": " + std::strerror(errno));
        return candidate;
    }
    throw ClientError(kExitUsage, name + " and " + std::to_string(kMaxSuffix) + " numbered copies exist already");
}

class RetrieverClient : public ClientApplication {
public:
    RetrieverClient()
        : ClientApplication("implicit (HTTPS, default) or off (plain HTTP), as the server runs",
                            "The maillab retriever client (HTTPS on TLS 1.3). Without --user it is interactive. With "
                            "--id N it shows one message decoded (subject, addresses, text, attachments; --raw: as sent) "
                            "and --save-attachments DIR saves its attachments.",
                            "Exit status: 0 done, 1 refused by the server (HTTP error), 2 usage, 3 cannot connect, 4 TLS "
                            "(certificate, --tls mismatch), 5 not an HTTP server or the server went away.",
                            {{"user", "read this account's mailbox", "EMAIL"},
                             {"password", "the account's password", "PASSWORD"},
                             {"id", "show one message", "N"},
                             {"offset", "skip this many of the newest messages in the list", "N"},
                             {"limit", "list at most N messages", "N"},
                             {"json", "print the server's JSON as is"},
                             {"raw", "with --id: print the message as stored (RFC 5322)"},
                             {"save-attachments", "with --id: save the message's attachments in DIR (made if missing; "
                              "a name already there gets a number, nothing is overwritten)", "DIR"},
                             {"header", "add a request header, e.g. 'If-None-Match: \"L5.3\"' (repeatable)",
                              "NAME: VALUE", kRepeatable}}) {}

protected:
    void handleOption(const std::string& name, const std::string& value) override {
        ClientApplication::handleOption(name, value);
        if (name == "verbose" || name == "json" || name == "raw") {
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
        if (helpRequested()) return kOk;
        auto& cfg = config();
        ClientSettings common;
        try {
            common = settings(9100, "http");
        } catch (const std::invalid_argument& e) {
            std::cerr << "error: " << e.what() << "\n";
            return kUsage;
        }
        domain_ = common.domain;
        const Target& target = common.target;
        if (target.tlsMode != "implicit" && target.tlsMode != "off") {
            std::cerr << "error: --tls must be implicit (HTTPS) or off (plain HTTP), as the server runs\n";
            return kUsage;
        }
        Poco::Net::Context::Ptr context;
        if (target.tlsMode != "off") {
            context = clientContext(target.caFile, cfg.getString("client.keylog", ""), "http/1.1");
            if (!context) return kExitTls;
        }
        connection_ = std::make_unique<RetrieverConnection>(target, context, common.timeout,
                                                            cfg.getBool("client.verbose", false));
        connection_->extraHeaders_ = headers_;
        try {
            return cfg.has("client.user") ? runScripted() : runInteractive(target.host, target.port);
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
        } else if (cfg.has("client.save-attachments")) {
            std::cerr << "error: --save-attachments needs --id N: the message whose attachments to save\n";
            return kUsage;
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
        if (json || cfg.getBool("client.raw", false)) printBody(r.body, std::cout);
        else if (cfg.has("client.id")) printMessage(r.body, std::cout);
        else printList(r.body, std::cout);
        if (cfg.has("client.save-attachments") && !cfg.getBool("client.raw", false))
            return saveAttachments(r.body, cfg.getString("client.save-attachments"), user, password);
        return kOk;
    }

    // Each attachment of the message (its JSON in `json`) downloaded from its URL into `dir`.
    int saveAttachments(const std::string& json, const std::string& dir, const std::string& user,
                        const std::string& password) {
        auto m = Poco::JSON::Parser().parse(json).extract<Poco::JSON::Object::Ptr>();
        auto attachments = m->getArray("attachments");
        if (!attachments || attachments->size() == 0) {
            std::cout << "No attachments to save.\n";
            return kOk;
        }
        if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
            std::cerr << "error: cannot make the directory " << dir << ": " << std::strerror(errno) << "\n";
            return kUsage;
        }
        int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirFd < 0) {
            std::cerr << "error: " << dir << " is not a directory I can open: " << std::strerror(errno) << "\n";
            return kUsage;
        }
        int result = kOk;
        try {
            for (size_t i = 0; i < attachments->size(); ++i) {
                auto a = attachments->getObject(static_cast<unsigned>(i));
                int64_t index = a->getValue<int64_t>("index");
                // The name is made safe here too: the server is not trusted with the local disk.
                std::string name = mime::safeFileName(a->getValue<std::string>("name"), static_cast<size_t>(index));
                HttpResult part = connection_->get(a->getValue<std::string>("url"), user, password);
                if (part.status != 200) {
                    std::cerr << "error: part " << index << ": " << part.status << " " << part.reason << ": "
                              << errorMessage(part) << "\n";
                    result = kRefused;
                    continue;
                }
                std::string saved = saveNew(dirFd, name, part.body);
                std::cout << "Saved " << dir << (dir.empty() || dir.back() == '/' ? "" : "/") << saved << " ("
                          << humanSize(static_cast<int64_t>(part.body.size())) << ")\n";
            }
        } catch (...) {
            ::close(dirFd);
            throw;
        }
        ::close(dirFd);
        return result;
    }

    int runInteractive(const std::string& host, int port) {
        std::cout << "maillab retriever client for " << (config().getString("client.tls", "implicit") == "off" ? "http" : "https")
                  << "://" << host << ":" << port << "/\n"
                  << "Commands: GET (read a mailbox), GET /path (any request, as sent), HELP, QUIT. Ctrl-D quits.\n";
        connection_->connect();  // a server that is not there is said now, before any password is asked
        std::cout << "Connected.\n";
        std::string line, user, password;
        // The account is asked once and kept for this session's later requests, as a browser keeps a
        // Basic login; a refused one (401) is forgotten.
        auto signIn = [&]() {
            if (!user.empty()) return true;
            std::string name, secret;
            if (!terminal_.line("  email (@" + domain_ + " is added to a bare name): ", name)) return false;
            if (!terminal_.secret("  password: ", secret)) return false;
            user = withDomain(name);
            password = secret;
            return true;
        };
        auto request = [&](const std::string& path) {
            HttpResult r = connection_->get(path, user, password);
            if (r.status == 401) user.clear(), password.clear();
            return r;
        };
        while (terminal_.line("http> ", line, true)) {
            std::string trimmed = text::trim(line);
            size_t space = trimmed.find(' ');
            std::string word = text::lowerCase(trimmed.substr(0, space));
            std::string path = space == std::string::npos ? "" : text::trim(trimmed.substr(space));
            const std::string mailbox = "/mailboxes/" + (user.empty() ? "you@" + domain_ : user) + "/messages";
            if (word.empty()) continue;
            if (word == "quit" || word == "exit") break;
            if (word == "help" || word == "?") {
                std::cout << "GET        asks for your address and password (once), lists your mail, and opens a message\n"
                             "GET /path  sends GET /path as it is and shows the status and the body, e.g.\n"
                             "           GET " << mailbox << "?limit=2\n"
                             "QUIT       leaves\n";
                continue;
            }
            if (word != "get") {
                std::cout << "Unknown command " << line << "; try GET, GET /path, HELP or QUIT\n";
                continue;
            }
            if (!path.empty()) {
                if (path[0] != '/' || path.find_first_of(" \t") != std::string::npos) {
                    std::cout << "A path starts with / and has no spaces (%20 for one), e.g. GET " << mailbox << "\n";
                    continue;
                }
                if (!signIn()) break;
                HttpResult r = request(path);
                std::cout << "HTTP " << r.status << " " << r.reason << (r.contentType.empty() ? "" : "  (" + r.contentType + ")")
                          << "\n";
                printBody(r.body, std::cout);
                continue;
            }
            if (!signIn()) break;
            HttpResult r = request(listPath(user));
            std::cout << "HTTP " << r.status << " " << r.reason << "\n";
            if (r.status != 200) {
                std::cout << "  " << errorMessage(r) << "\n";
                continue;
            }
            printList(r.body, std::cout);
            std::string id;
            while (terminal_.line("  open message id (Enter to go back): ", id) && !id.empty()) {
                HttpResult m = request(listPath(user, "/" + id));
                if (m.status != 200) std::cout << "HTTP " << m.status << " " << m.reason << ": " << errorMessage(m) << "\n";
                else printMessage(m.body, std::cout);
                if (m.status == 401) break;  // the account was forgotten: GET asks again
            }
        }
        std::cout << "Bye.\n";
        return kOk;
    }

    std::vector<std::pair<std::string, std::string>> headers_;
    Terminal terminal_;
    std::string domain_;
    std::unique_ptr<RetrieverConnection> connection_;
};

}  // namespace
}  // namespace maillab

MAILLAB_CLIENT_MAIN(maillab::RetrieverClient)
