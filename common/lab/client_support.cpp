// Shared client plumbing; see client_support.h.
#include "client_support.h"

#include "app_support.h"
#include "../net/tls.h"

#include <Poco/Path.h>
#include <Poco/Exception.h>
#include <Poco/NumberParser.h>
#include <Poco/Util/Option.h>

#include <editline/readline.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <clocale>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <utility>
#include <iostream>

namespace maillab {

int runClient(Poco::Util::Application& app, int argc, char** argv) {
    try {
        app.init(argc, argv);
    } catch (const Poco::Exception& e) {
        std::cerr << "error: " << e.displayText() << " (see " << (argc > 0 ? argv[0] : "the program") << " --help)\n";
        return 2;
    }
    try {
        return app.run();
    } catch (const std::exception& e) {
        std::cerr << "error: " << e.what() << "\n";
        return 5;
    }
}

int numberOption(const Poco::Util::AbstractConfiguration& config, const std::string& key, int fallback, int low,
                 int high, const std::string& option) {
    std::string text = config.getString(key, std::to_string(fallback));
    int value = 0;
    if (!Poco::NumberParser::tryParse(text, value) || value < low || value > high)
        throw std::invalid_argument(option + " must be a whole number from " + std::to_string(low) + " to " +
                                    std::to_string(high) + ", not '" + text + "'");
    return value;
}

std::vector<ClientOption> commonClientOptions(const std::string& tlsModes) {
    return {
        {"help", "print this help and exit"},
        {"host", "server to connect to (default localhost)", "HOST"},
        {"port", "server port", "PORT"},
        {"servername", "name the certificate must carry (default: --host)", "NAME"},
        {"ca", "CA certificate to trust (default certs/ca.pem)", "FILE"},
        {"domain", "domain added to a bare user name (default 447.edu)", "DOMAIN"},
        {"keylog", "append TLS secrets to FILE for Wireshark (also SSLKEYLOGFILE)", "FILE"},
        {"timeout", "seconds to wait for the server (default 30)", "SECONDS"},
        {"tls", tlsModes, "MODE"},
        {"verbose", "print the raw exchange and the negotiated TLS parameters"},
    };
}

void addClientOptions(Poco::Util::OptionSet& options, const std::vector<ClientOption>& clientOptions) {
    for (const ClientOption& o : clientOptions) {
        Poco::Util::Option option(o.name, "", o.description);
        option.required(false).repeatable(o.repeatable);
        if (o.argument) option.argument(o.argument);
        if (o.argument && !o.repeatable) option.binding(std::string("client.") + o.name);
        options.addOption(option);
    }
}

ClientApplication::ClientApplication(std::string tlsModes, std::string helpHeader, std::string helpFooter,
                                     std::vector<ClientOption> ownOptions)
    : tlsModes_(std::move(tlsModes)),
      helpHeader_(std::move(helpHeader)),
      helpFooter_(std::move(helpFooter)),
      ownOptions_(std::move(ownOptions)) {}

void ClientApplication::defineOptions(Poco::Util::OptionSet& options) {
    Application::defineOptions(options);
    addClientOptions(options, commonClientOptions(tlsModes_));
    addClientOptions(options, ownOptions_);
}

void ClientApplication::handleOption(const std::string& name, const std::string& value) {
    Application::handleOption(name, value);
    if (name == "help") {
        printHelp(options(), commandName(), helpHeader_, helpFooter_);
        stopOptionsProcessing();
        helpRequested_ = true;
    }
}

ClientSettings ClientApplication::settings(int defaultPort, const std::string& service) const {
    const auto& cfg = config();
    ClientSettings settings;
    Target& target = settings.target;
    target.host = cfg.getString("client.host", "localhost");
    target.port = numberOption(cfg, "client.port", defaultPort, 1, 65535, "--port");
    settings.timeout = numberOption(cfg, "client.timeout", 30, 1, 86400, "--timeout");
    target.serverName = cfg.getString("client.servername", target.host);
    target.service = service;
    target.tlsMode = cfg.getString("client.tls", "implicit");
    target.caFile = cfg.getString("client.ca", "certs/ca.pem");
    settings.domain = cfg.getString("client.domain", "447.edu");
    return settings;
}

std::string withDomain(std::string name, const std::string& domain) {
    while (!name.empty() && name.back() == ' ') name.pop_back();
    while (!name.empty() && name.front() == ' ') name.erase(name.begin());
    if (!name.empty() && name.find('@') == std::string::npos) name += "@" + domain;
    return name;
}

namespace {
volatile std::sig_atomic_t interruptedFlag = 0;
int watchedFd = -1;
bool serverSpokeFlag = false;

void onInterrupt(int) { interruptedFlag = 1; }

int readByte() {
    for (;;) {
        if (interruptedFlag) return EOF;
        if (watchedFd >= 0) {
            pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {watchedFd, POLLIN, 0}};
            int rc = ::poll(fds, 2, -1);
            if (rc < 0 && errno == EINTR) continue;
            if (rc > 0 && !fds[0].revents && fds[1].revents) {
                serverSpokeFlag = true;
                return EOF;
            }
        }
        unsigned char c;
        ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n == 1) return c;
        if (n < 0 && errno == EINTR) continue;
        return EOF;
    }
}

// libedit reads keys through this, one character (a Unicode code point, decoded from the
// terminal's UTF-8) per call. A Ctrl-C (EINTR: the handler is installed without SA_RESTART) ends
// the line as Ctrl-D would, so that the client can still say QUIT and show the exchange.
int readKey(FILE*) {
    int first = readByte();
    if (first == EOF || first < 0x80) return first;
    int length = first >= 0xF0 ? 4 : first >= 0xE0 ? 3 : first >= 0xC0 ? 2 : 1;
    if (length == 1) return 0xFFFD;  // a stray continuation byte
    int codePoint = first & (0x3F >> (length - 1));
    for (int i = 1; i < length; ++i) {
        int next = readByte();
        if (next == EOF) return EOF;
        if ((next & 0xC0) != 0x80) return 0xFFFD;
        codePoint = (codePoint << 6) | (next & 0x3F);
    }
    return codePoint;
}

// libedit drops what it cannot decode in the "C" locale: take the user's, and a UTF-8 one when the
// user's has no multibyte characters (a bare chroot or container), so that "Café" stays "Café".
void useUtf8Locale() {
    std::setlocale(LC_ALL, "");
    const char* codeset = std::setlocale(LC_CTYPE, nullptr);
    std::string name = codeset ? codeset : "";
    if (name.find("UTF-8") == std::string::npos && name.find("utf8") == std::string::npos &&
        !std::setlocale(LC_CTYPE, "C.UTF-8"))
        std::setlocale(LC_CTYPE, "C.utf8");
}
}  // namespace

bool Terminal::interrupted() { return interruptedFlag != 0; }
void Terminal::clearInterrupt() { interruptedFlag = 0; }
void Terminal::watch(int fd) { watchedFd = fd; }
bool Terminal::serverSpoke() { return serverSpokeFlag; }

Terminal::Terminal() : tty_(::isatty(STDIN_FILENO)) {
    if (!tty_) return;
    useUtf8Locale();
    struct sigaction action {};
    action.sa_handler = onInterrupt;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: a blocked read returns EINTR
    ::sigaction(SIGINT, &action, nullptr);
    rl_catch_signals = 0;
    rl_getc_function = readKey;
}

bool Terminal::line(const std::string& prompt, std::string& out, bool remember) {
    if (tty_) {
        if (interruptedFlag) return false;
        serverSpokeFlag = false;
        char* text = ::readline(prompt.c_str());
        if (!text || interruptedFlag || serverSpokeFlag) {
            std::free(text);
            std::cout << (interruptedFlag ? "^C\n" : "\n");
            return false;
        }
        out = text;
        std::free(text);
        if (remember && !out.empty()) ::add_history(out.c_str());
        return true;
    }
    if (!std::getline(std::cin, out)) return false;
    if (!out.empty() && out.back() == '\r') out.pop_back();
    return true;
}

bool Terminal::secret(const std::string& prompt, std::string& out) {
    if (!tty_) return line(prompt, out);
    std::cout << prompt << std::flush;
    termios old{};
    ::tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    bool ok = static_cast<bool>(std::getline(std::cin, out)) && !interruptedFlag;
    ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cout << "\n";
    if (!ok) std::cin.clear();
    return ok;
}

Poco::Net::Context::Ptr clientContext(const std::string& caFile, const std::string& keyLogFile,
                                      const std::string& alpn) {
    try {
        TlsOptions tls;
        tls.caFile = caFile;
        tls.keyLogFile = keyLogFile;
        Poco::Net::Context::Ptr context = makeClientContext(tls);
        offerAlpn(*context, alpn);
        std::string keylog = enableKeyLog(*context, keyLogFile);
        if (!keylog.empty()) std::cerr << "note: writing TLS secrets to " << keylog << "\n";
        return context;
    } catch (const Poco::Exception& e) {
        // A relative path is read from the current folder: say which file that was.
        std::string where = Poco::Path(caFile).isAbsolute() ? "" : " (" + Poco::Path(caFile).absolute().toString() + ")";
        std::cerr << "error: cannot load the CA certificate " << caFile << where << ": " << e.displayText()
                  << "\n       (run the client from the maillab folder or pass --ca <maillab>/certs/ca.pem; "
                     "`make certs`, or starting a server once, creates it)\n";
        return nullptr;
    }
}

}  // namespace maillab
