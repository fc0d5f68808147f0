// Helpers shared by the lab's Poco applications.
#include "app_support.h"
#include "../net/bounded_log.h"
#include "../net/certs.h"
#include "../net/text.h"

#include <Poco/Util/HelpFormatter.h>
#include <Poco/Util/Option.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <malloc.h>
#include <stdexcept>
#include <unistd.h>

namespace maillab {

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
    options.sqlite.commitDelay.microseconds = config.getInt("store.commitDelayMicroseconds");
    options.sqlite.commitDelay.afterBatchOf = config.getInt("store.commitDelayAfterBatchOf");
    options.postgres.commitDelay = options.sqlite.commitDelay;
    return options;
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

std::unique_ptr<Store> openServerStore(const TlsOptions& tls, const StoreOptions& store, Poco::Logger& logger,
                                       int& failureExit) {
    failureExit = Poco::Util::Application::EXIT_SOFTWARE;
    try {
        if (ensureServerCertificates(tls))
            logger.information("event=certs-created ca=" + tls.caFile + " cert=" + tls.certFile);
        return openStore(store);
    } catch (const StoreSettingError& e) {
        logger.error(std::string("event=startup-failed reason=") + logValue(e.what()));
        failureExit = Poco::Util::Application::EXIT_USAGE;
    } catch (const std::exception& e) {
        logger.error(std::string("event=startup-failed reason=") + logValue(e.what()));
    }
    return nullptr;
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

}  // namespace maillab
