/*
 * libFuzzer target for the FTP dissector of worker/sniff (the layout of the
 * input and the checks are in fuzz_sniff.h).
 */
#define FUZZ_PREAMBLE {1, "220 (vsFTPd 3.0.3)\r\n"}
#include "fuzz_sniff.h"
