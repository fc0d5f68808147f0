// What the lab's two clients share: the application around them (their common options, --help,
// the connection settings those options give), the terminal (libedit line editing and history at a
// terminal, plain lines from a pipe, passwords without echo), bare names completed with the lab
// domain, and the TLS context with a clear message when the CA is missing.
#pragma once
#include "../net/connect.h"

#include <Poco/Net/Context.h>
#include <Poco/AutoPtr.h>
#include <Poco/Util/AbstractConfiguration.h>
#include <Poco/Util/Application.h>
#include <Poco/Util/OptionSet.h>

#include <string>
#include <vector>

namespace maillab {

// The clients' main(): Poco's option errors ("Unknown option", "Not a valid integer") as one line
// that points at --help, exit status 2; anything unexpected as one line, exit status 5. Never an
// uncaught exception.
int runClient(Poco::Util::Application& app, int argc, char** argv);
#define MAILLAB_CLIENT_MAIN(App)                       \
    int main(int argc, char** argv) {                  \
        Poco::AutoPtr<App> app = new App;              \
        return maillab::runClient(*app, argc, argv);   \
    }

// A whole number from the configuration within [low, high], or a one-line error naming the option.
int numberOption(const Poco::Util::AbstractConfiguration& config, const std::string& key, int fallback, int low,
                 int high, const std::string& option);

// One option of a client. Its value lands in the configuration as client.<name>, unless it is a
// flag (`argument` nullptr) or repeatable: those are for the application's handleOption.
struct ClientOption {
    const char* name;
    std::string description;
    const char* argument = nullptr;  // what --help shows after the name
    bool repeatable = false;
};
constexpr bool kRepeatable = true;

// The options every lab client takes: --help, --host, --port, --servername, --ca, --domain,
// --keylog, --timeout, --tls, --verbose. `tlsModes` describes the --tls values.
std::vector<ClientOption> commonClientOptions(const std::string& tlsModes);

void addClientOptions(Poco::Util::OptionSet& options, const std::vector<ClientOption>& clientOptions);

// What a client connects to and how long it waits, from the common options.
struct ClientSettings {
    Target target;        // --host, --port, --servername, --ca, and --tls as given
    int timeout = 30;     // --timeout, seconds
    std::string domain;   // --domain, added to a bare user name
};

// The Poco application both clients are: the common options (commonClientOptions) and the
// client's own after them, --help in the client's own words, and the settings those options give.
// A client handles its options after this class's handleOption and starts main() with
// `if (helpRequested()) return kExitOk;`.
class ClientApplication : public Poco::Util::Application {
protected:
    // `tlsModes`: what --tls takes; `helpHeader`, `helpFooter`: --help's words before and after the
    // options; `ownOptions`: the client's own, in --help's order.
    ClientApplication(std::string tlsModes, std::string helpHeader, std::string helpFooter,
                      std::vector<ClientOption> ownOptions);
    void defineOptions(Poco::Util::OptionSet& options) override;
    void handleOption(const std::string& name, const std::string& value) override;
    bool helpRequested() const { return helpRequested_; }
    // For a server of `service` ("smtp", "http") whose port is `defaultPort` unless --port says
    // otherwise. Throws std::invalid_argument naming a bad --port or --timeout.
    ClientSettings settings(int defaultPort, const std::string& service) const;

private:
    std::string tlsModes_, helpHeader_, helpFooter_;
    std::vector<ClientOption> ownOptions_;
    bool helpRequested_ = false;
};

// "ana" -> "ana@447.edu"; surrounding spaces dropped; an address with '@' is left as it is.
std::string withDomain(std::string name, const std::string& domain);

// The terminal of an interactive client: line editing with the user's locale (so that typed
// UTF-8 such as "Grüße" is kept), history, passwords without echo, and Ctrl-C turned into an
// orderly end of input (interrupted() then says so) instead of killing the program mid-session.
class Terminal {
public:
    Terminal();
    bool interactive() const { return tty_; }
    // One line; false at end of input (Ctrl-D). At a terminal: editing, and history if `remember`.
    bool line(const std::string& prompt, std::string& out, bool remember = false);
    // Like line(), without echo at a terminal.
    bool secret(const std::string& prompt, std::string& out);
    // True once Ctrl-C was pressed; line() and secret() then return false.
    static bool interrupted();
    // Ctrl-C handled (the client abandoned what was being typed and carries on): line() reads again.
    static void clearInterrupt();
    // While waiting for a key, also watch this descriptor (the server's socket, -1: none): when
    // the server speaks unasked (a 421 as it shuts down), line() returns false and serverSpoke()
    // is true, so that the client can show it at once rather than after the next command.
    static void watch(int fd);
    static bool serverSpoke();

private:
    bool tty_;
};

// The client TLS context (VERIFY_STRICT against the lab CA) with the key log enabled when asked;
// nullptr after printing what to do when the CA cannot be loaded. `alpn`: the protocol offered.
Poco::Net::Context::Ptr clientContext(const std::string& caFile, const std::string& keyLogFile,
                                      const std::string& alpn);

}  // namespace maillab
