/*
 * libFuzzer target for the POP3 dissector of worker/sniff (the layout of the
 * input and the checks are in fuzz_sniff.h).
 */
#define FUZZ_PREAMBLE {1, "+OK POP3 ready\r\n"}
#include "fuzz_sniff.h"
