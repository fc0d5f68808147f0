// maillab-admin: the instructor's account tool, on the same database as the servers (they may be
// running). `make password USER=ana` runs `set-password`.
//
//   maillab-admin [--db users/maillab.db] [--domain 447.edu] set-password EMAIL
//       a new 8-digit password ending in 447, printed once (for a student who lost hers, or to give
//       postmaster@ its first one); the old one stops working at once on both servers
//   maillab-admin [--db ...] list    the accounts, one per line
// Exit status: 0 done, 1 no such account, 2 usage, 3 the database cannot be opened.
#include "../auth.h"
#include "../password.h"
#include "../store.h"

#include <sqlite3.h>

#include <ctime>
#include <iostream>
#include <string>
#include <vector>

namespace {
int usage() {
    std::cerr << "usage: maillab-admin [--db FILE] [--domain DOMAIN] set-password EMAIL | list\n";
    return 2;
}
}  // namespace

int main(int argc, char** argv) {
    std::string db = "users/maillab.db", domain = "447.edu";
    std::vector<std::string> words;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if ((a == "--db" || a == "--domain") && i + 1 < argc) (a == "--db" ? db : domain) = argv[++i];
        else if (a.rfind("--db=", 0) == 0) db = a.substr(5);
        else if (a.rfind("--domain=", 0) == 0) domain = a.substr(9);
        else if (a == "-h" || a == "--help") {
            usage();
            return 0;
        }
        else words.push_back(a);
    }
    if (words.empty()) return usage();
    try {
        maillab::SqliteOptions options;
        options.path = db;
        auto store = maillab::openSqliteStore(options);
        if (words[0] == "set-password" && words.size() == 2) {
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
            std::cout << email << " password: " << password << "\n";
            return 0;
        }
        if (words[0] == "list" && words.size() == 1) {
            sqlite3* raw = nullptr;
            if (sqlite3_open_v2(db.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) throw std::runtime_error(sqlite3_errmsg(raw));
            sqlite3_stmt* st = nullptr;
            sqlite3_prepare_v2(raw, "SELECT email, created_at FROM accounts ORDER BY email", -1, &st, nullptr);
            while (st && sqlite3_step(st) == SQLITE_ROW) {
                std::time_t t = static_cast<std::time_t>(sqlite3_column_int64(st, 1));
                char when[32];
                std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", std::gmtime(&t));
                std::cout << reinterpret_cast<const char*>(sqlite3_column_text(st, 0)) << "  registered " << when << " UTC\n";
            }
            sqlite3_finalize(st);
            sqlite3_close(raw);
            return 0;
        }
    } catch (const std::exception& e) {
        std::cerr << "maillab-admin: cannot use " << db << ": " << e.what() << "\n";
        return 3;
    }
    return usage();
}
