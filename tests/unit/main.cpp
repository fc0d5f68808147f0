// Catch2 entry point for the unit tests (with Catch2 3, Catch2Main provides it instead).
#if __has_include(<catch2/catch.hpp>)
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#endif
