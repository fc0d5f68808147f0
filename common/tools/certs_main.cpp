// maillab-certs [--host NAME] [DIR]: creates the lab CA and server certificate under DIR (default
// certs/) when missing; `make certs` runs it. --host (`make certs HOSTNAME=lab.example.edu`) adds a
// class server's name and addresses to the server certificate, issuing it again from the same CA
// when it does not name the host yet. The servers do the same at start-up for localhost.
// --expired DIR: a server certificate that expired yesterday, for the lab's TLS failure scenario
// (never in certs/, the lab's own folder).
#include "../certs.h"

#include <iostream>

int main(int argc, char** argv) {
    std::string dir = "certs", host;
    bool expired = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--expired") expired = true;
        else if (a == "--host" && i + 1 < argc) host = argv[++i];
        else if (a.rfind("--host=", 0) == 0) host = a.substr(7);
        else if (a == "--help" || a == "-h") {
            std::cout << "usage: maillab-certs [--host NAME] [--expired] [DIR]\n";
            return 0;
        } else if (!a.empty() && a[0] == '-') {
            std::cerr << "maillab-certs: unknown option " << a << " (usage: maillab-certs [--host NAME] [DIR])\n";
            return 2;
        } else dir = a;
    }
    if (expired && (dir == "certs" || dir == "certs/" || dir == "./certs")) {
        std::cerr << "maillab-certs: --expired writes a broken certificate: give a folder of its own, not certs/\n";
        return 2;
    }
    try {
        auto paths = maillab::CertPaths::inDirectory(dir);
        if (maillab::ensureCertificates(paths, host, expired)) {
            std::cout << "created " << paths.serverCert << (expired ? " (expired yesterday)" : "") << " for";
            for (const auto& name : maillab::serverNames(host)) std::cout << " " << name;
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
