// maillab-admin: the instructor's tool on the same database as the servers (they may be running),
// and the one way scripts (the grader, the tests) read the record: everything goes through the
// Store interface, never SQL. `make password USER=ana` runs `set-password`, `make class-status`
// runs `class-status --watch`.
//
//   maillab-admin [--db users/maillab.db | --db postgresql://user@host/dbname [--schema NAME]]
//                 [--domain 447.edu] COMMAND   (--db takes what store.url takes)
//     set-password EMAIL    a new 8-digit password ending in 447, printed once; the old one stops
//                           working at once on both servers, and the account's guess budgets are full
//     delete-account EMAIL  the account and its mailbox go; its password stops working at once
//     set-role EMAIL ROLE   ROLE instructor (the class board and /metrics) or student
//     list                  the accounts, one per line;  accounts --json: the same as JSON
//     mailbox EMAIL --json  the mailbox's messages, oldest first, each with its stored text (base64)
//     tls-sessions --json [CLIENT_RANDOM ...]
//                           the provenance record (authenticated TLS sessions), all or those named
//     class-status [--json] [--roster roster.csv] [--watch SECONDS] [--stuck-minutes 20]
//                           the live class board
//     migrate --from URL --to URL [--into-nonempty]
//                           moves a class's database (its SQLite file) into another store (PostgreSQL),
//                           in one transaction on the target; says how many of each it moved
//                           (docs/deploy.md, "Moving a class's database"). --from defaults to --db.
// Exit status: 0 done, 1 no such account, 2 usage, 3 the database cannot be opened or read (or the
// move failed), 4 migrate refused a target that holds something already.
#include "../lab/auth.h"
#include "../lab/class_board.h"
#include "../lab/migrate_store.h"
#include "../lab/password.h"
#include "../lab/store.h"

#include <Poco/JSON/Array.h>
#include <Poco/JSON/Object.h>

#include <chrono>
#include <cstdint>
#include <csignal>
#include <ctime>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

const char* const kUsage =
    "usage: maillab-admin [--db FILE|postgresql://user@host/dbname] [--schema NAME] [--domain DOMAIN] COMMAND\n"
    "  set-password EMAIL | delete-account EMAIL | set-role EMAIL instructor|student | list | accounts --json\n"
    "  mailbox EMAIL --json | tls-sessions --json [CLIENT_RANDOM ...]\n"
    "  class-status [--json] [--roster roster.csv] [--watch SECONDS] [--stuck-minutes N]\n"
    "  migrate --from sqlite:users/maillab.db --to postgresql://user@host/dbname [--into-nonempty]\n";

int usage(const std::string& why = "") {
    if (!why.empty()) std::cerr << "maillab-admin: " << why << "\n";
    std::cerr << kUsage;
    return 2;
}

std::string json(const Poco::JSON::Array& array) {
    std::ostringstream out;
    array.stringify(out);
    return out.str() + "\n";
}

volatile std::sig_atomic_t stopWatching = 0;

maillab::StoreOptions storeOptions(const std::string& url, const std::string& schema) {
    maillab::StoreOptions options;
    options.url = url;
    options.postgres.schema = schema;
    options.postgres.maxConnections = 2;
    return options;
}

// migrate: the source must exist (an SQLite file is created when opened, and would move nothing);
// the target is created when it is an SQLite file, and must be empty unless --into-nonempty.
int migrate(const std::string& fromUrl, const std::string& toUrl, const std::string& schema, bool intoNonEmpty) {
    const std::string fromName = maillab::describeStoreUrl(fromUrl), toName = maillab::describeStoreUrl(toUrl);
    std::string file = maillab::sqlitePathOf(fromUrl);
    if (!file.empty() && ::access(file.c_str(), F_OK) != 0) {
        std::cerr << "maillab-admin: no database " << fromName << " to move (give --from sqlite:FILE)\n";
        return 3;
    }
    if (maillab::sqlitePathOf(fromUrl) == maillab::sqlitePathOf(toUrl) && (!file.empty() || fromUrl == toUrl)) {
        std::cerr << "maillab-admin: --from and --to name the same database\n";
        return 2;
    }
    std::unique_ptr<maillab::Store> source, target;
    try {
        source = maillab::openStore(storeOptions(fromUrl, schema));
    } catch (const std::exception& e) {
        std::cerr << "maillab-admin: cannot use " << fromName << ": " << e.what() << "\n";
        return 3;
    }
    try {
        target = maillab::openStore(storeOptions(toUrl, schema));
    } catch (const std::exception& e) {
        std::cerr << "maillab-admin: cannot use " << toName << ": " << e.what() << "\n";
        return 3;
    }
    try {
        maillab::MigrationOptions options;
        options.intoNonEmpty = intoNonEmpty;
        maillab::MigrationCounts counts = maillab::migrateStore(*source, *target, options);
        std::cout << "moved " << fromName << " into " << toName << " (one transaction):\n"
                  << maillab::describeMigration(counts)
                  << "guess budgets were not moved: they start full (they refill within minutes anyway)\n"
                  << "next: set store.url = " << toName << " for every server, and start them\n";
        return 0;
    } catch (const maillab::MigrationMismatch& e) {
        std::cerr << "maillab-admin: the move into " << toName << " was committed, but " << e.what()
                  << ": a server was still using one of them. Stop every server, empty the target (a new "
                  << "database or schema) and run the same command again\n";
        return 3;
    } catch (const maillab::MigrationRefused& e) {
        std::cerr << "maillab-admin: " << toName << ": " << e.what() << "\n";
        return 4;
    } catch (const std::exception& e) {
        std::cerr << "maillab-admin: moving " << fromName << " into " << toName << " failed: " << e.what()
                  << "\nnothing was kept in " << toName << " (the move is one transaction): fix the cause and "
                  << "run the same command again\n";
        return 3;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string db = "users/maillab.db", domain = "447.edu", roster, secretFile, schema, from, to;
    bool asJson = false, intoNonEmpty = false;
    int watchSeconds = 0;
    int64_t stuckMinutes = 20;
    std::vector<std::string> words;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&](std::string& into) {
            if (i + 1 >= argc) return false;
            into = argv[++i];
            return true;
        };
        std::string number;
        if (a == "--from" || a == "--to") {
            if (!value(a == "--from" ? from : to)) return usage(a + " needs a database (sqlite:FILE or postgresql://...)");
        } else if (a == "--into-nonempty") {
            intoNonEmpty = true;
        } else if (a == "--db" || a == "--domain" || a == "--roster" || a == "--secret-file" || a == "--schema") {
            if (!value(a == "--db" ? db : a == "--domain" ? domain : a == "--roster" ? roster : a == "--schema" ? schema : secretFile))
                return usage(a + " needs a value");
        } else if (a.rfind("--db=", 0) == 0) {
            db = a.substr(5);
        } else if (a.rfind("--domain=", 0) == 0) {
            domain = a.substr(9);
        } else if (a == "--json") {
            asJson = true;
        } else if (a == "--watch" || a == "--stuck-minutes") {
            if (!value(number)) return usage(a + " needs a number");
            try {
                (a == "--watch" ? watchSeconds = std::stoi(number) : stuckMinutes = std::stoll(number));
            } catch (const std::exception&) {
                return usage(a + " needs a number, not '" + number + "'");
            }
        } else if (a == "-h" || a == "--help") {
            std::cout << kUsage;
            return 0;
        } else {
            words.push_back(a);
        }
    }
    if (words.empty()) return usage();
    const std::string& command = words[0];
    if (command == "migrate") {
        if (words.size() != 1) return usage("migrate takes --from and --to, nothing else");
        if (to.empty()) return usage("migrate needs --to (the database to move into, e.g. postgresql://user@host/dbname)");
        return migrate(from.empty() ? db : from, to, schema, intoNonEmpty);
    }
    const std::string url = db;
    db = maillab::describeStoreUrl(url);  // named in messages without a password
    try {
        maillab::StoreOptions options;
        options.url = url;
        options.postgres.schema = schema;
        options.postgres.maxConnections = 2;
        std::string file = maillab::sqlitePathOf(url);
        if (!file.empty() && ::access(file.c_str(), F_OK) != 0 && command != "set-password")
            throw std::runtime_error("no such database (start a server first, or give --db)");
        auto store = maillab::openStore(options);
        if (command == "set-password" && words.size() == 2) {
            maillab::AuthPolicy policy;
            policy.labDomain = domain;
            maillab::Authenticator auth(*store, policy);
            std::string email = auth.normalizeUser(words[1]);
            if (email == "postmaster@" + domain) auth.ensurePostmaster();
            std::string password = maillab::generateLabPassword();
            if (!store->setPasswordHash(email, maillab::hashPassword(password, policy.scrypt))) {
                std::cerr << "maillab-admin: no account " << email << " in " << db
                          << " (students register themselves: AUTH with an empty password)\n";
                return 1;
            }
            store->clearGuessBudgets(email);  // a guesser's spending no longer keeps her out
            std::cout << email << " password: " << password << "\n";
            return 0;
        }
        if (command == "delete-account" && words.size() == 2) {
            maillab::AuthPolicy policy;
            policy.labDomain = domain;
            std::string email = maillab::Authenticator(*store, policy).normalizeUser(words[1]);
            if (!store->deleteAccount(email)) {
                std::cerr << "maillab-admin: no account " << email << " in " << db << "\n";
                return 1;
            }
            std::cout << email << " deleted, with its mailbox\n";
            return 0;
        }
        if (command == "set-role" && words.size() == 3) {
            maillab::AuthPolicy policy;
            policy.labDomain = domain;
            std::string email = maillab::Authenticator(*store, policy).normalizeUser(words[1]);
            std::string role = words[2] == "student" ? "" : words[2];
            if (role != "" && role != "instructor") return usage("a role is instructor or student");
            if (!store->setRole(email, role)) {
                std::cerr << "maillab-admin: no account " << email << " in " << db
                          << " (register it first: AUTH with an empty password)\n";
                return 1;
            }
            std::cout << email << " is now " << (role.empty() ? "a student" : "an instructor") << "\n";
            return 0;
        }
        if ((command == "list" && words.size() == 1) || (command == "accounts" && asJson && words.size() == 1)) {
            Poco::JSON::Array list;
            for (const maillab::Account& a : store->listAccounts()) {
                if (!asJson) {
                    std::time_t t = static_cast<std::time_t>(a.createdAt);
                    char when[32];
                    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::gmtime(&t));
                    std::cout << a.email << "  registered " << when << " UTC" << (a.role.empty() ? "" : "  " + a.role)
                              << "\n";
                    continue;
                }
                Poco::JSON::Object o;
                o.set("email", a.email);
                o.set("created_at", a.createdAt);
                o.set("role", a.role.empty() ? std::string("student") : a.role);
                list.add(o);
            }
            if (asJson) std::cout << json(list);
            return 0;
        }
        if (command == "mailbox" && asJson && words.size() == 2) {
            maillab::AuthPolicy policy;
            policy.labDomain = domain;
            std::string email = maillab::Authenticator(*store, policy).normalizeUser(words[1]);
            auto listed = store->listMessages(email, 0, INT64_MAX);
            Poco::JSON::Array list;
            for (auto it = listed.rbegin(); it != listed.rend(); ++it) {
                auto message = store->getMessage(email, it->id);
                if (!message) continue;
                Poco::JSON::Object o;
                o.set("id", it->id);
                o.set("queue_id", it->queueId);
                o.set("envelope_from", it->envelopeFrom);
                o.set("from", it->from);
                o.set("to", it->to);
                o.set("subject", it->subject);
                o.set("date", it->date);
                o.set("received_at", it->receivedAt);
                o.set("size", it->size);
                o.set("raw_base64", maillab::base64Encode(message->raw));
                list.add(o);
            }
            std::cout << json(list);
            return 0;
        }
        if (command == "tls-sessions" && asJson) {
            std::vector<std::string> randoms(words.begin() + 1, words.end());
            Poco::JSON::Array list;
            for (const maillab::TlsSessionRecord& r : store->findTlsSessions(randoms)) {
                Poco::JSON::Object o;
                o.set("client_random", r.clientRandom);
                o.set("server_random", r.serverRandom);
                o.set("service", r.service);
                o.set("peer", r.peer);
                o.set("started_at", r.startedAt);
                o.set("account", r.account);
                list.add(o);
            }
            std::cout << json(list);
            return 0;
        }
        if (command == "class-status" && words.size() == 1) {
            // --secret-file is taken for symmetry with `make token`: the sender checks the tokens
            // when a message is stored (class.secretFile), the board only reads what it recorded.
            maillab::Roster students = maillab::loadRoster(roster);
            std::signal(SIGINT, [](int) { stopWatching = 1; });
            std::signal(SIGTERM, [](int) { stopWatching = 1; });
            for (;;) {
                maillab::Board board = maillab::classBoard(*store, students, std::time(nullptr), stuckMinutes * 60);
                if (asJson) std::cout << maillab::boardJson(board);
                else std::cout << (watchSeconds > 0 && isatty(1) ? "\x1b[H\x1b[2J" : "") << maillab::boardText(board);
                std::cout.flush();
                if (watchSeconds <= 0) return 0;
                for (int waited = 0; waited < watchSeconds * 10 && !stopWatching; ++waited)
                    std::this_thread::sleep_for(std::chrono::milliseconds(100));
                if (stopWatching) return 0;
            }
        }
    } catch (const std::exception& e) {
        std::cerr << "maillab-admin: cannot use " << db << ": " << e.what() << "\n";
        return 3;
    }
    return usage("unknown command or wrong arguments: " + command);
}
