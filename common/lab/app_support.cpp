// Helpers shared by the lab's Poco applications.
#include "app_support.h"
#include "../net/bounded_log.h"
#include "../net/certs.h"
#include "../net/text.h"

#include <Poco/AutoPtr.h>
#include <Poco/Net/SecureServerSocket.h>
#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>
#include <Poco/Util/PropertyFileConfiguration.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <malloc.h>
#include <sstream>
#include <stdexcept>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace maillab {

void loadBuiltinDefaults(Poco::Util::LayeredConfiguration& config, const char* propertiesText, int priority) {
    std::istringstream in(propertiesText);
    Poco::AutoPtr<Poco::Util::PropertyFileConfiguration> defaults = new Poco::Util::PropertyFileConfiguration(in);
    config.add(defaults, priority, false);  // low priority: everything else overrides it
}

void addServerOptions(Poco::Util::OptionSet& options, const std::string& prefix, const std::string& tlsModes) {
    auto add = [&](const char* name, const char* shortName, const char* description, const char* argument,
                   const std::string& property) {
        Poco::Util::Option option(name, shortName, description);
        option.required(false).repeatable(false);
        if (argument) option.argument(argument);
        if (!property.empty()) option.binding(property);
        options.addOption(option);
    };
    add("help", "h", "print this help and exit", nullptr, "");
    add("port", "p", "TCP port to listen on (0 = any free port, printed on the ready line)", "PORT", prefix + ".port");
    add("bind", "b", "addresses to listen on, comma-separated (default 127.0.0.1,::1: loopback on both stacks)",
        "ADDRS", prefix + ".bind");
    add("db", "", "the store: an SQLite file (default users/maillab.db) or postgresql://user@host:port/dbname",
        "FILE|URL", "store.url");
    add("certs", "", "directory with ca.pem, server.pem, server.key (created if missing)", "DIR", "");
    add("cert", "", "server certificate chain, PEM (default certs/server.pem)", "FILE", "tls.cert");
    add("key", "", "server private key, PEM (default certs/server.key)", "FILE", "tls.key");
    add("ca", "", "lab CA certificate, PEM (default certs/ca.pem)", "FILE", "tls.ca");
    add("domain", "", "the lab's mail domain (default 447.edu)", "DOMAIN", prefix + ".domain");
    add("keylog", "", "append TLS secrets to FILE for Wireshark (also SSLKEYLOGFILE)", "FILE", "tls.keylog");
    add("config", "c", "load settings from a .properties file", "FILE", "maillab.configFile");
    add("verbose", "v", "log every exchange with its connection id", nullptr, "");
    add("tls", "", tlsModes.c_str(), "MODE", prefix + ".tls");
    add("allow-plaintext-auth", "", "with --tls off: accept passwords sent in clear (to show base64 is not encryption)",
        nullptr, "");
}

void printHelp(const Poco::Util::OptionSet& options, const std::string& command, const std::string& header,
               const std::string& footer) {
    Poco::Util::HelpFormatter help(options);
    help.setCommand(command);
    help.setUsage("[options]");
    help.setHeader(header);
    help.setFooter(footer);
    help.format(std::cout);
}

bool applyServerOption(Poco::Util::LayeredConfiguration& config, const std::string& prefix, const std::string& name,
                       const std::string& value) {
    if (name == "verbose") config.setBool(prefix + ".verbose", true);
    if (name == "allow-plaintext-auth") config.setBool(prefix + ".allowPlaintextAuth", true);
    if (name == "certs") {
        config.setString("tls.ca", value + "/ca.pem");
        config.setString("tls.cert", value + "/server.pem");
        config.setString("tls.key", value + "/server.key");
    }
    return name == "help";
}

StoreOptions storeOptionsFrom(const Poco::Util::AbstractConfiguration& config) {
    StoreOptions options;
    // store.path, the setting's name before store.url, is still read from older files.
    options.url = config.has("store.path") ? config.getString("store.path") : config.getString("store.url");
    options.sqlite.busyTimeoutMs = config.getInt("store.busyTimeoutMs");
    options.sqlite.synchronous = config.getString("store.synchronous");
    options.postgres.maxConnections = config.getInt("store.maxConnections");
    options.postgres.schema = config.getString("store.schema");
    options.postgres.connectTimeoutSeconds = config.getInt("store.connectTimeoutSeconds");
    return options;
}

TlsOptions tlsOptionsFrom(const Poco::Util::AbstractConfiguration& config) {
    TlsOptions tls;
    tls.certFile = config.getString("tls.cert");
    tls.keyFile = config.getString("tls.key");
    tls.caFile = config.getString("tls.ca");
    tls.keyLogFile = config.getString("tls.keylog");
    tls.sessionTickets = config.getInt("tls.sessionTickets");
    return tls;
}

proxy::Settings proxySettingsFrom(const Poco::Util::AbstractConfiguration& config) {
    proxy::Settings settings;
    settings.trusted = proxy::TrustedPeers::parse(config.getString("proxy.trustedAddresses", ""));
    settings.timeoutMs = config.getInt("proxy.headerTimeoutMs", 3000);
    long long maxBytes = config.getInt64("proxy.maxHeaderBytes", 4096);
    if (settings.timeoutMs <= 0 || maxBytes < 232 || maxBytes > 65551)
        throw std::invalid_argument("proxy.headerTimeoutMs must be over 0 and proxy.maxHeaderBytes from 232 (a v2 "
                                    "header with unix addresses) to 65551 (the largest v2 header)");
    settings.maxBytes = static_cast<size_t>(maxBytes);
    return settings;
}

AuthPolicy authPolicyFrom(const Poco::Util::AbstractConfiguration& config, const std::string& domainKey) {
    AuthPolicy policy;
    policy.labDomain = config.getString(domainKey);
    policy.registrationEnabled = config.getBool("auth.registration", false);
    policy.guessBurst = config.getInt("auth.guessBurst");
    policy.guessRefillSeconds = config.getInt64("auth.guessRefillSeconds");
    policy.cacheTtlSeconds = config.getInt64("auth.cacheTtlSeconds");
    policy.scrypt = ScryptParams{config.getUInt64("auth.scrypt.n"), config.getUInt64("auth.scrypt.r"),
                                 config.getUInt64("auth.scrypt.p")};
    policy.maxConcurrentHashes = config.getInt("auth.maxConcurrentHashes");
    policy.hashWaitMilliseconds = config.getInt64("auth.hashWaitMilliseconds");
    policy.registrationBurst = config.getInt("auth.registrationBurst");
    policy.registrationRefillSeconds = config.getInt64("auth.registrationRefillSeconds");
    return policy;
}

bool ensureServerCertificates(const TlsOptions& tls) {
    size_t slash = tls.caFile.rfind('/');
    std::string caDir = slash == std::string::npos ? "." : tls.caFile.substr(0, slash);
    return ensureCertificates(CertPaths{tls.caFile, caDir + "/ca.key", tls.certFile, tls.keyFile});
}

int64_t freeBytesAt(const std::string& directory) {
    struct statvfs fs {};
    if (::statvfs(directory.c_str(), &fs) != 0) return INT64_MAX;
    return static_cast<int64_t>(fs.f_bavail) * static_cast<int64_t>(fs.f_frsize);
}

long raiseOpenFileLimit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);
    ::getrlimit(RLIMIT_NOFILE, &limit);
    return static_cast<long>(limit.rlim_cur);
}

std::unique_ptr<Store> openServerStore(const TlsOptions& tls, const StoreOptions& store, Poco::Logger& logger) {
    try {
        if (ensureServerCertificates(tls))
            logger.information("event=certs-created ca=" + tls.caFile + " cert=" + tls.certFile);
        return openStore(store);
    } catch (const std::exception& e) {
        logger.error(std::string("event=startup-failed reason=") + logValue(e.what()));
        return nullptr;
    }
}

bool openClassRecord(const Poco::Util::AbstractConfiguration& config, Store& store, Authenticator& auth,
                     Poco::Logger& logger, ClassRecord& record) {
    record.provenance = config.getBool("store.provenance");
    record.stuckSeconds = config.getInt64("class.stuckMinutes") * 60;
    try {
        record.roster = loadRoster(config.getString("class.roster"));
    } catch (const std::exception& e) {
        logger.error("event=startup-failed reason=" + logValue(std::string(e.what()) + " (class.roster)"));
        return false;
    }
    if (config.getBool("auth.registrationRosterOnly")) {
        if (record.roster.empty()) {
            logger.error("event=startup-failed reason=\"auth.registrationRosterOnly needs class.roster (student,account)\"");
            return false;
        }
        std::vector<std::string> accounts;
        for (const auto& [account, student] : record.roster) accounts.push_back(account);
        auth.restrictRegistrationTo(accounts);
    }
    if (record.provenance) {
        int64_t days = config.getInt64("store.provenanceDays");
        try {
            if (days > 0) {
                int64_t dropped = store.forgetTlsSessionsBefore(static_cast<int64_t>(std::time(nullptr)) - days * 86400);
                if (dropped > 0)
                    logger.information("event=provenance-expired records=" + std::to_string(dropped) + " days=" +
                                       std::to_string(days));
            }
        } catch (const std::exception& e) {
            logger.warning("event=provenance result=error reason=" + logValue(e.what()));
        }
    }
    if (config.getBool("store.activity")) {
        Poco::Logger* log = &logger;
        record.activity = std::make_unique<ActivityRecorder>(
            store, config.getInt("store.activityFlushMilliseconds"),
            [log](const std::string& why) { log->warning("event=activity result=error reason=" + logValue(why)); });
        std::string secretFile = config.getString("class.secretFile");
        if (!secretFile.empty()) record.tokens = std::make_unique<LabTokens>(secretFile, record.roster);
    }
    return true;
}

void loadServerConfiguration(Poco::Util::Application& app, const char* sharedDefaults, const char* ownDefaults) {
    loadBuiltinDefaults(app.config(), sharedDefaults, 1001);  // under the server's own
    loadBuiltinDefaults(app.config(), ownDefaults, 1000);
    if (app.config().has("maillab.configFile")) app.loadConfiguration(app.config().getString("maillab.configFile"));
}

Poco::Net::Context::Ptr serverTlsContext(const TlsOptions& tls, const std::string& alpn, Poco::Logger& logger) {
    Poco::Net::Context::Ptr context = makeServerContext(tls);
    acceptAlpn(*context, alpn);
    std::string keylog = enableKeyLog(*context, tls.keyLogFile);
    if (!keylog.empty()) logger.warning("event=keylog file=" + keylog + " note=\"TLS secrets are being written\"");
    return context;
}

void LabServer::initialize(Application& self) {
    BoundedAsyncChannel::registerClass();  // before the logging settings name them
    StderrLineChannel::registerClass();
    loadServerConfiguration(*this, description_.sharedDefaults, description_.ownDefaults);
    ServerApplication::initialize(self);
}

void LabServer::defineOptions(Poco::Util::OptionSet& options) {
    ServerApplication::defineOptions(options);
    addServerOptions(options, description_.prefix, description_.tlsModes);
}

void LabServer::handleOption(const std::string& name, const std::string& value) {
    ServerApplication::handleOption(name, value);
    if (applyServerOption(config(), description_.prefix, name, value)) {
        printHelp(options(), commandName(), description_.title,
                  "Every setting and its default: " + description_.settingsFile + " and common/shared.properties.");
        stopOptionsProcessing();
        helpRequested_ = true;
    }
}

int LabServer::main(const std::vector<std::string>&) {
    if (helpRequested_) return EXIT_OK;
    return runServer(logger(), [this] { return serve(); });
}

namespace {
// The last resort behind SqliteStore::checkSharedMemory(): if the database's -shm file is cut short
// between that check and SQLite's access, the mapping faults. One clear line and exit 74 (EX_IOERR)
// rather than a signal death; every 250 already sent was committed, so nothing promised is lost.
extern "C" void onBusError(int) {
    static const char kMessage[] =
        "event=fatal reason=\"the database's -shm file was truncated or replaced while in use (SIGBUS); "
        "every acknowledged message is on disk. Stop every maillab server, then start them again\"\n";
    ssize_t written = ::write(2, kMessage, sizeof kMessage - 1);
    (void)written;
    ::_exit(74);
}
}  // namespace

int runServer(Poco::Logger& logger, const std::function<int()>& serve) {
    struct sigaction action {};
    action.sa_handler = onBusError;
    sigemptyset(&action.sa_mask);
    ::sigaction(SIGBUS, &action, nullptr);
    // A file size limit reached (ulimit -f) is then a failed write SQLite reports, not a signal death.
    ::signal(SIGXFSZ, SIG_IGN);
    // Large buffers (scrypt's 16 MiB, a message being received) always come from mmap and go back to
    // the system when freed. glibc otherwise raises its mmap threshold after the first such free,
    // and each thread's arena then keeps megabytes it no longer uses: with hundreds of connection
    // threads that was most of the servers' memory under an AUTH flood or many large messages.
    ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    try {
        return serve();
    } catch (const Poco::SyntaxException& e) {
        logger.error("event=startup-failed reason=" +
                     logValue("a setting is not a valid number (" + e.message() + "): check the options and "
                              "--config file; --help lists them"));
        return Poco::Util::Application::EXIT_USAGE;
    }
}

namespace {
struct BindFailure {
    int error;
    std::string address;
};

std::unique_ptr<Poco::Net::ServerSocket> bindOne(const Poco::Net::SocketAddress& address, int backlog,
                                                 Poco::Net::Context::Ptr tlsContext) {
    std::unique_ptr<Poco::Net::ServerSocket> socket;
    if (tlsContext) socket = std::make_unique<Poco::Net::SecureServerSocket>(tlsContext);
    else socket = std::make_unique<Poco::Net::ServerSocket>();
    try {
        // SO_REUSEADDR (a restart while old connections sit in TIME_WAIT), never SO_REUSEPORT: a
        // second server on a port in use must fail, not share the port.
        if (address.family() == Poco::Net::SocketAddress::IPv6) socket->bind6(address, true, false, true);
        else socket->bind(address, true, false);
        socket->listen(backlog);
    } catch (const Poco::Exception& e) {
        throw BindFailure{e.code(), address.toString()};
    }
    return socket;
}
}  // namespace

std::vector<std::unique_ptr<Poco::Net::ServerSocket>> openListeners(const std::string& addresses, int port,
                                                                    int backlog, Poco::Net::Context::Ptr tlsContext,
                                                                    const std::string& plaintextWarning,
                                                                    Poco::Logger& logger) {
    if (port < 0 || port > 65535) {
        logger.error("event=startup-failed reason=" + logValue("--port must be from 0 to 65535 (0: any free port), not " +
                                                               std::to_string(port)));
        return {};
    }
    std::vector<Poco::Net::IPAddress> hosts;
    std::istringstream list(addresses);
    for (std::string item; std::getline(list, item, ',');) {
        item.erase(0, item.find_first_not_of(' '));
        item.erase(item.find_last_not_of(' ') + 1);
        if (item.size() > 2 && item.front() == '[' && item.back() == ']') item = item.substr(1, item.size() - 2);
        if (item.empty()) continue;
        Poco::Net::IPAddress host;
        if (item == "::") {
            host = Poco::Net::IPAddress(Poco::Net::IPAddress::IPv6);  // every IPv6 address (Poco 1.11 cannot parse "::")
        } else if (!Poco::Net::IPAddress::tryParse(item, host)) {
            logger.error("event=startup-failed reason=" + logValue("--bind: '" + item + "' is not an IP address"));
            return {};
        }
        if (!plaintextWarning.empty() && !host.isLoopback()) {
            logger.error("event=startup-failed reason=\"--tls off listens on loopback only\"");
            return {};
        }
        hosts.push_back(host);
    }
    if (hosts.empty()) {
        logger.error("event=startup-failed reason=\"--bind needs at least one address\"");
        return {};
    }
    if (!plaintextWarning.empty()) logger.warning("event=warning note=" + logValue(plaintextWarning));

    // Port 0: the first address picks a free port, the others must get the same one; a clash
    // there (another program has it on that address only) means another try with a new port.
    for (int attempt = 0; attempt < 20; ++attempt) {
        std::vector<std::unique_ptr<Poco::Net::ServerSocket>> sockets;
        Poco::UInt16 chosen = static_cast<Poco::UInt16>(port);
        try {
            for (const auto& host : hosts) {
                try {
                    sockets.push_back(bindOne(Poco::Net::SocketAddress(host, chosen), backlog, tlsContext));
                    chosen = sockets.back()->address().port();
                } catch (const BindFailure& failure) {
                    // No IPv6 on this machine: loopback on IPv4 still serves "localhost".
                    bool noIpv6 = host.family() == Poco::Net::IPAddress::IPv6 &&
                                  (failure.error == EADDRNOTAVAIL || failure.error == EAFNOSUPPORT);
                    if (noIpv6 && hosts.size() > 1) {
                        logger.warning("event=warning note=" + logValue("cannot listen on " + failure.address +
                                                                        ": this machine has no IPv6; skipped"));
                        continue;
                    }
                    throw;
                }
            }
            if (sockets.empty()) throw BindFailure{EADDRNOTAVAIL, addresses};
            return sockets;
        } catch (const BindFailure& failure) {
            if (failure.error == EADDRINUSE && port == 0 && sockets.size() > 0) continue;  // try another port
            std::string why = failure.error == EADDRINUSE
                                  ? "port " + std::to_string(port) + " is in use on " + failure.address +
                                        " (another server already runs there: stop it, or choose another PORT=)"
                              : failure.error == EADDRNOTAVAIL
                                  ? failure.address + " is not an address of this machine (--bind)"
                              : failure.error == EACCES
                                  ? "port " + std::to_string(port) + " needs root (ports below 1024): choose PORT=9000 or above"
                                  : "cannot listen on " + failure.address + " (error " + std::to_string(failure.error) + ")";
            logger.error("event=startup-failed reason=" + logValue(why));
            return {};
        }
    }
    logger.error("event=startup-failed reason=\"no free port common to every --bind address\"");
    return {};
}

std::string describeListeners(const std::vector<std::unique_ptr<Poco::Net::ServerSocket>>& listeners) {
    std::string text;
    for (const auto& socket : listeners) text += (text.empty() ? "" : ",") + socket->address().toString();
    return text;
}

}  // namespace maillab
