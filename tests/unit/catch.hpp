// Catch2 for the unit tests: version 2 (Debian 12's `catch2`, one header) or version 3 (Ubuntu 24.04's,
// a compiled library; the Makefile then links Catch2Main). The test macros are the same in both.
#pragma once
#if __has_include(<catch2/catch.hpp>)
#include <catch2/catch.hpp>
#else
#include <catch2/catch_all.hpp>
#endif
