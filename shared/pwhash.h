/*
 * pwhash: password hashes in crypt(3) format (libxcrypt; yescrypt "$y$" for
 * new hashes).  Verification is slow on purpose: workers call it only from
 * their helper thread (shared/auth.c).  Thread-safe.
 */
#ifndef SOCKS5D_PWHASH_H
#define SOCKS5D_PWHASH_H

#include <stdbool.h>
#include <stddef.h>

#define PWHASH_MAX 160

/* Hash a password with a fresh random salt.  0 or a negative errno. */
int pwhash_make(const char *password, char out[PWHASH_MAX]);
/* Does the text look like a crypt(3) hash we can verify? */
bool pwhash_is_hash(const char *text);
/* Constant-time comparison of crypt(password, hash) with hash. */
bool pwhash_verify(const char *password, const char *hash);

#endif
