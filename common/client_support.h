// What the lab's two clients share: their common options, the terminal (libedit line editing and
// history at a terminal, plain lines from a pipe, passwords without echo), bare names completed with
// the lab domain, and the TLS context with a clear message when the CA is missing.
#pragma once
#include <Poco/Net/Context.h>
#include <Poco/Util/OptionSet.h>

#include <string>

namespace maillab {

// --help, --host, --port, --servername, --ca, --domain, --keylog, --timeout, --tls, --verbose; each
// value lands in the configuration as client.<name>. `tlsModes` describes the --tls values.
void addClientOptions(Poco::Util::OptionSet& options, const std::string& tlsModes);

// "ana" -> "ana@447.edu"; surrounding spaces dropped; an address with '@' is left as it is.
std::string withDomain(std::string name, const std::string& domain);

class Terminal {
public:
    Terminal();
    bool interactive() const { return tty_; }
    // One line; false at end of input (Ctrl-D). At a terminal: editing, and history if `remember`.
    bool line(const std::string& prompt, std::string& out, bool remember = false);
    // Like line(), without echo at a terminal.
    bool secret(const std::string& prompt, std::string& out);

private:
    bool tty_;
};

// The client TLS context (VERIFY_STRICT against the lab CA) with the key log enabled when asked;
// nullptr after printing what to do when the CA cannot be loaded.
Poco::Net::Context::Ptr clientContext(const std::string& caFile, const std::string& keyLogFile);

}  // namespace maillab
