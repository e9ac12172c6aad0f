/*
 * libFuzzer target for the HTTP dissector of worker/sniff (the layout of the
 * input and the checks are in fuzz_sniff.h).
 */
#define FUZZ_PREAMBLE {0, ""}
#include "fuzz_sniff.h"
