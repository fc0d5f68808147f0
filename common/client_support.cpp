// Shared client plumbing; see client_support.h.
#include "client_support.h"

#include "tls.h"

#include <Poco/Exception.h>
#include <Poco/Util/Option.h>

#include <editline/readline.h>
#include <termios.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>

namespace maillab {

void addClientOptions(Poco::Util::OptionSet& options, const std::string& tlsModes) {
    auto add = [&](const char* name, const std::string& description, const char* argument) {
        Poco::Util::Option option(name, "", description);
        option.required(false).repeatable(false);
        if (argument) option.argument(argument).binding(std::string("client.") + name);
        options.addOption(option);
    };
    add("help", "print this help and exit", nullptr);
    add("host", "server to connect to (default localhost)", "HOST");
    add("port", "server port", "PORT");
    add("servername", "name the certificate must carry (default: --host)", "NAME");
    add("ca", "CA certificate to trust (default certs/ca.pem)", "FILE");
    add("domain", "domain added to a bare user name (default 447.edu)", "DOMAIN");
    add("keylog", "append TLS secrets to FILE for Wireshark (also SSLKEYLOGFILE)", "FILE");
    add("timeout", "seconds to wait for the server (default 30)", "SECONDS");
    add("tls", tlsModes, "MODE");
    add("verbose", "print the raw exchange and the negotiated TLS parameters", nullptr);
}

std::string withDomain(std::string name, const std::string& domain) {
    while (!name.empty() && name.back() == ' ') name.pop_back();
    while (!name.empty() && name.front() == ' ') name.erase(name.begin());
    if (!name.empty() && name.find('@') == std::string::npos) name += "@" + domain;
    return name;
}

Terminal::Terminal() : tty_(::isatty(STDIN_FILENO)) {}

bool Terminal::line(const std::string& prompt, std::string& out, bool remember) {
    if (tty_) {
        char* text = ::readline(prompt.c_str());
        if (!text) return false;
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
    bool ok = static_cast<bool>(std::getline(std::cin, out));
    ::tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cout << "\n";
    return ok;
}

Poco::Net::Context::Ptr clientContext(const std::string& caFile, const std::string& keyLogFile) {
    try {
        TlsOptions tls;
        tls.caFile = caFile;
        tls.keyLogFile = keyLogFile;
        Poco::Net::Context::Ptr context = makeClientContext(tls);
        std::string keylog = enableKeyLog(*context, keyLogFile);
        if (!keylog.empty()) std::cerr << "note: writing TLS secrets to " << keylog << "\n";
        return context;
    } catch (const Poco::Exception& e) {
        std::cerr << "error: cannot load the CA certificate " << caFile << ": " << e.displayText()
                  << "\n       (run `make certs`, or start a server once, to create it)\n";
        return nullptr;
    }
}

}  // namespace maillab
