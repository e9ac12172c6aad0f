/*
 * names: what a user name and a password may be.  One rule for every entry
 * point (command line, configuration file, pipo administration, SOCKS login)
 * so that a name that gets in can always be written back to the
 * configuration file and logged on one line.  Pure functions; any thread.
 */
#ifndef SOCKS5D_NAMES_H
#define SOCKS5D_NAMES_H

#include <stddef.h>

/* NULL when name[0..len) may be a user name, else why not ("contains a
 * control byte", ...).  A name is 1..255 bytes (RFC 1929 ULEN), holds no
 * control byte (0x00-0x1f, 0x7f) and does not begin or end with a blank
 * (the configuration file trims blanks).  ':' and '#' are allowed: the
 * file's NAME:HASH splits at the last ':' and '#' starts a comment only at
 * the beginning of a line. */
const char *names_user_problem(const char *name, size_t len);

/* NULL when pw[0..len) may be a password, else why not: a password is
 * 1..255 bytes (RFC 1929 PLEN) without NUL. */
const char *names_password_problem(const char *pw, size_t len);

/* The length (1..4) of the valid UTF-8 sequence at p[0..left), left >= 1;
 * 0 when it is not one (an overlong form, a surrogate, past U+10FFFF, a
 * stray or missing continuation byte, or cut short by left).  For the
 * escaping of names in the metrics' labels and pipoClient's JSON. */
size_t names_utf8_len(const unsigned char *p, size_t left);

#endif
