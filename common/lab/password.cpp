// Lab password generation and scrypt hashing on OpenSSL 3.
#include "password.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cctype>
#include <cstdio>
#include <stdexcept>
#include <vector>

namespace maillab {

namespace {
constexpr size_t kSaltBytes = 16;
constexpr size_t kHashBytes = 32;
constexpr uint64_t kScryptMaxMem = 256ull * 1024 * 1024;

std::string scrypt(const std::string& password, const std::string& salt, const ScryptParams& p) {
    std::string out(kHashBytes, '\0');
    if (EVP_PBE_scrypt(password.data(), password.size(), reinterpret_cast<const unsigned char*>(salt.data()),
                       salt.size(), p.n, p.r, p.p, kScryptMaxMem, reinterpret_cast<unsigned char*>(out.data()),
                       out.size()) != 1)
        throw std::runtime_error("scrypt failed");
    return out;
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
        size_t pos = s.find(sep, start);
        parts.push_back(s.substr(start, pos - start));
        if (pos == std::string::npos) return parts;
        start = pos + 1;
    }
}
}  // namespace

std::string generateLabPassword() {
    // Largest multiple of 100000 below 2^32: values at or above it are drawn again so every
    // five-digit prefix is equally likely.
    constexpr uint32_t kLimit = 4294900000u;
    uint32_t value = 0;
    do {
        if (RAND_bytes(reinterpret_cast<unsigned char*>(&value), sizeof value) != 1)
            throw std::runtime_error("RAND_bytes failed");
    } while (value >= kLimit);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%05u447", value % 100000u);
    return buf;
}

std::string hashPassword(const std::string& password, const ScryptParams& params) {
    std::string salt(kSaltBytes, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(salt.data()), salt.size()) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return "scrypt$" + std::to_string(params.n) + "$" + std::to_string(params.r) + "$" + std::to_string(params.p) +
           "$" + base64Encode(salt) + "$" + base64Encode(scrypt(password, salt, params));
}

bool verifyPassword(const std::string& password, const std::string& encoded) {
    auto parts = split(encoded, '$');
    if (parts.size() != 6 || parts[0] != "scrypt") return false;
    try {
        ScryptParams p{std::stoull(parts[1]), std::stoull(parts[2]), std::stoull(parts[3])};
        std::string salt = base64Decode(parts[4]);
        std::string expected = base64Decode(parts[5]);
        if (expected.size() != kHashBytes) return false;
        std::string actual = scrypt(password, salt, p);
        return CRYPTO_memcmp(actual.data(), expected.data(), kHashBytes) == 0;
    } catch (const std::exception&) {
        return false;
    }
}

std::string base64Encode(const std::string& data) {
    std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(data.data()), static_cast<int>(data.size()));
    out.resize(static_cast<size_t>(n));
    return out;
}

std::string base64Decode(const std::string& text) {
    if (text.size() % 4 != 0) throw std::invalid_argument("base64 length is not a multiple of 4");
    for (char c : text)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/' || c == '='))
            throw std::invalid_argument("invalid base64 character");
    size_t firstPad = text.find('=');
    if (firstPad != std::string::npos && (firstPad + 2 < text.size() || text.find_first_not_of('=', firstPad) != std::string::npos))
        throw std::invalid_argument("base64 padding in the middle");
    std::string out(3 * text.size() / 4 + 1, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
    if (n < 0) throw std::invalid_argument("invalid base64");
    // EVP_DecodeBlock counts the bytes that the '=' padding stands for; drop them.
    size_t pad = 0;
    if (!text.empty() && text.back() == '=') pad++;
    if (text.size() > 1 && text[text.size() - 2] == '=') pad++;
    out.resize(static_cast<size_t>(n) - pad);
    return out;
}

}  // namespace maillab
