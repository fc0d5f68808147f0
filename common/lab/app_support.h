// The lab's server scaffolding on top of the network floor (common/net/server_runtime.h): the options
// both servers take, --help, the store and authentication settings, opening the store (certificates
// made when missing), what a class server keeps for the instructor, and the guarded main (LabServer).
#pragma once
#include "auth.h"
#include "class_board.h"
#include "../net/proxy_protocol.h"
#include "store.h"
#include "../net/log_text.h"
#include "../net/server_runtime.h"
#include "../net/tls.h"

#include <Poco/Logger.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/Util/Application.h>
#include <Poco/Util/LayeredConfiguration.h>
#include <Poco/Util/OptionSet.h>
#include <Poco/Util/ServerApplication.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace maillab {

// The options both servers take; `prefix` is "sender" or "retriever" (--port binds <prefix>.port),
// `tlsModes` describes the --tls values the server accepts.
void addServerOptions(Poco::Util::OptionSet& options, const std::string& prefix, const std::string& tlsModes);
// Handles the options that are not plain bindings (--certs, --verbose, --allow-plaintext-auth).
// Returns true for --help.
bool applyServerOption(Poco::Util::LayeredConfiguration& config, const std::string& prefix, const std::string& name,
                       const std::string& value);
// Prints --help: the options, what the program is, where its settings are.
void printHelp(const Poco::Util::OptionSet& options, const std::string& command, const std::string& header,
               const std::string& footer);

// store.url (or store.path from older files) and the backends' tuning.
StoreOptions storeOptionsFrom(const Poco::Util::AbstractConfiguration& config);
AuthPolicy authPolicyFrom(const Poco::Util::AbstractConfiguration& config, const std::string& domainKey);
// Creates the lab CA (key beside tls.ca) and the server certificate when missing; true if created.
bool ensureServerCertificates(const TlsOptions& tls);
// A server's start: certificates made when missing, the store opened. Logs and returns nullptr on
// failure, with the exit code for it in failureExit (64 for a store.* setting that cannot work, else 70).
std::unique_ptr<Store> openServerStore(const TlsOptions& tls, const StoreOptions& store, Poco::Logger& logger,
                                       int& failureExit);
// What a class server keeps for the instructor (common/class.properties): provenance, the class
// board's activity (class_board.h), lab tokens and the roster.
struct ClassRecord {
    bool provenance = false;
    std::unique_ptr<ActivityRecorder> activity;
    std::unique_ptr<LabTokens> tokens;
    Roster roster;
    int64_t stuckSeconds = 20 * 60;
};
// Reads the store.provenance*, store.activity* and class.* settings into `record`, and drops
// provenance older than store.provenanceDays. Logs and returns false when a setting is unusable.
// With auth.registrationRosterOnly, only the roster's accounts may register (`auth` is told so).
bool openClassRecord(const Poco::Util::AbstractConfiguration& config, Store& store, Authenticator& auth,
                     Poco::Logger& logger, ClassRecord& record);

// A server's main() body: a setting that should be a number and is not becomes one startup-failed
// line and exit 64 (EX_USAGE), not Poco's bare "Syntax error".
int runServer(Poco::Logger& logger, const std::function<int()>& serve);

// Both servers' Poco application: the compiled-in settings (common/shared.properties under the
// server's own file), the common options (addServerOptions), --help, and the guarded main
// (runServer). A server says what it is in the constructor and implements serve(): build its
// context, listen, print the ready line, wait for the stop.
class LabServer : public Poco::Util::ServerApplication {
public:
    struct Description {
        std::string prefix;        // "sender" or "retriever": the settings' prefix
        std::string tlsModes;      // what --tls takes, for --help
        std::string title;         // the first line of --help
        std::string settingsFile;  // where the server's own settings are documented
        const char* ownDefaults;     // the server's .properties, compiled in
        const char* sharedDefaults;  // common/shared.properties, compiled in (linked into each server)
    };
    explicit LabServer(Description description) : description_(std::move(description)) {}

protected:
    void initialize(Application& self) override;
    void defineOptions(Poco::Util::OptionSet& options) override;
    void handleOption(const std::string& name, const std::string& value) override;
    int main(const std::vector<std::string>& args) override;
    virtual int serve() = 0;

private:
    Description description_;
    bool helpRequested_ = false;
};

}  // namespace maillab
