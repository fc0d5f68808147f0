// maillab-certs [--host NAME] [DIR]: creates the lab CA and server certificate under DIR (default
// certs/) when missing; `make certs` runs it. --host (`make certs HOSTNAME=lab.example.edu`) adds a
// class server's name and addresses to the server certificate, issuing it again from the same CA
// when it does not name the host yet. The servers do the same at start-up for localhost.
// --expired DIR: a server certificate that expired yesterday, for the lab's TLS failure scenario
// (never in certs/, the lab's own folder). --only-host NAME DIR: a server certificate that names NAME
// alone, not localhost, for the wrong-host scenario (a client that connects to localhost refuses it).
#include "../net/certs.h"

#include <iostream>

int main(int argc, char** argv) {
    std::string dir = "certs", host;
    bool expired = false, onlyHost = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--expired") expired = true;
        else if (a == "--only-host" && i + 1 < argc) host = argv[++i], onlyHost = true;
        else if (a == "--host" && i + 1 < argc) host = argv[++i];
        else if (a.rfind("--host=", 0) == 0) host = a.substr(7);
        else if (a == "--help" || a == "-h") {
            std::cout << "usage: maillab-certs [--host NAME] [--expired] [--only-host NAME] [DIR]\n";
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            std::cerr << "maillab-certs: unknown option " << a << " (usage: maillab-certs [--host NAME] [--expired] [--only-host NAME] [DIR])\n";
            return 2;
        } else dir = a;
    }
    if ((expired || onlyHost) && (dir == "certs" || dir == "certs/" || dir == "./certs")) {
        std::cerr << "maillab-certs: " << (expired ? "--expired" : "--only-host") << " writes a broken certificate: give a folder of its own, not certs/\n";
        return 2;
    }
    try {
        auto paths = maillab::CertPaths::inDirectory(dir);
        if (maillab::ensureCertificates(paths, host, expired, onlyHost)) {
            std::cout << "created " << paths.serverCert << (expired ? " (expired yesterday)" : "") << " for";
            auto names = maillab::serverNames(host);
            for (size_t n = onlyHost ? 3 : 0; n < names.size(); ++n) std::cout << " " << names[n];
            std::cout << "\nstudents trust " << paths.caCert << " (give them this file)\n";
        } else {
            std::cout << "certificates already present in " << dir << "/" << (host.empty() ? "" : " and naming " + host)
                      << "\n";
        }
    } catch (const std::exception& e) {
        std::cerr << "maillab-certs: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
