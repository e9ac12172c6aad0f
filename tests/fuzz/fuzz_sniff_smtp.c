/*
 * libFuzzer target for the SMTP dissector of worker/sniff (the layout of the
 * input and the checks are in fuzz_sniff.h).
 */
#define FUZZ_PREAMBLE                                                                              \
	{1, "220 mail ESMTP\r\n"}, {0, "EHLO client\r\n"},                                         \
	    {1, "250-mail\r\n250 AUTH PLAIN LOGIN\r\n"}
#include "fuzz_sniff.h"
