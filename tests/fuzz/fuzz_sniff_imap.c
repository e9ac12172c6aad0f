/*
 * libFuzzer target for the IMAP dissector of worker/sniff (the layout of the
 * input and the checks are in fuzz_sniff.h).
 */
#define FUZZ_PREAMBLE {1, "* OK [CAPABILITY IMAP4rev1 LITERAL+ SASL-IR] ready\r\n"}
#include "fuzz_sniff.h"
