// Password generation, scrypt hashing and base64.
#include "../../common/lab/password.h"

#include "catch.hpp"

#include <set>

using namespace maillab;

TEST_CASE("generated passwords have 8 digits and end in 447", "[password]") {
    std::set<std::string> prefixes;
    for (int i = 0; i < 2000; ++i) {
        std::string pw = generateLabPassword();
        REQUIRE(pw.size() == 8);
        REQUIRE(pw.substr(5) == "447");
        REQUIRE(pw.find_first_not_of("0123456789") == std::string::npos);
        prefixes.insert(pw.substr(0, 5));
    }
    // 2000 draws from 100000 values: collisions are rare, a broken generator repeats itself.
    CHECK(prefixes.size() > 1950);
}

TEST_CASE("leading digits are spread over 0-9", "[password]") {
    int counts[10] = {0};
    for (int i = 0; i < 5000; ++i) counts[generateLabPassword()[0] - '0']++;
    for (int c : counts) CHECK(c > 350);  // expected 500 each
}

TEST_CASE("scrypt hashes verify the right password only", "[password]") {
    ScryptParams cheap{1024, 8, 1};
    std::string hash = hashPassword("12345447", cheap);
    CHECK(hash.rfind("scrypt$1024$8$1$", 0) == 0);
    CHECK(hash.find("12345447") == std::string::npos);
    CHECK(verifyPassword("12345447", hash));
    CHECK_FALSE(verifyPassword("12345448", hash));
    CHECK_FALSE(verifyPassword("", hash));
}

TEST_CASE("the same password hashes differently each time (salt)", "[password]") {
    ScryptParams cheap{1024, 8, 1};
    CHECK(hashPassword("x", cheap) != hashPassword("x", cheap));
}

TEST_CASE("malformed hash records never verify", "[password]") {
    CHECK_FALSE(verifyPassword("x", ""));
    CHECK_FALSE(verifyPassword("x", "plain$x"));
    CHECK_FALSE(verifyPassword("x", "scrypt$1024$8$1$!!!$abc"));
    CHECK_FALSE(verifyPassword("x", "scrypt$notanumber$8$1$AAAA$AAAA"));
}

TEST_CASE("base64 round trip and rejection", "[password][base64]") {
    for (std::string s : {std::string(""), std::string("a"), std::string("ab"), std::string("abc"),
                          std::string("\0ana@447.edu\0pw", 16)})
        CHECK(base64Decode(base64Encode(s)) == s);
    CHECK(base64Encode(std::string("\0user\0pass", 10)) == "AHVzZXIAcGFzcw==");
    CHECK_THROWS(base64Decode("abc"));
    CHECK_THROWS(base64Decode("ab$="));
    CHECK_THROWS(base64Decode("a=bc"));
}
