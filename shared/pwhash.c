#include "pwhash.h"

#include <crypt.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

int pwhash_make(const char *password, char out[PWHASH_MAX])
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	if (!crypt_gensalt_rn("$y$", 0, NULL, 0, salt, sizeof salt))
		return -errno;
	struct crypt_data *cd = calloc(1, sizeof *cd);
	if (!cd)
		return -ENOMEM;
	const char *h = crypt_rn(password, salt, cd, sizeof *cd);
	int rc = 0;
	if (!h || h[0] == '*' || strlen(h) >= PWHASH_MAX)
		rc = -EINVAL;
	else
		memcpy(out, h, strlen(h) + 1);
	explicit_bzero(cd, sizeof *cd);
	free(cd);
	return rc;
}

bool pwhash_is_hash(const char *text)
{
	if (text[0] != '$' || strlen(text) >= PWHASH_MAX || crypt_checksalt(text) != CRYPT_SALT_OK)
		return false;
	/* crypt_checksalt accepts a bare setting ("$y$j9T$salt"); a hash also
	 * has its digest after the last '$': at least 22 characters of the
	 * crypt alphabet (the shortest digest, bcrypt's, has 31). */
	const char *digest = strrchr(text, '$') + 1;
	size_t n = strlen(digest);
	return n >= 22 && strspn(digest, "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") == n;
}

bool pwhash_verify(const char *password, const char *hash)
{
	struct crypt_data *cd = calloc(1, sizeof *cd);
	if (!cd)
		return false;
	const char *h = crypt_rn(password, hash, cd, sizeof *cd);
	bool ok = h && h[0] != '*' && strlen(h) == strlen(hash) &&
	          CRYPTO_memcmp(h, hash, strlen(hash)) == 0;
	explicit_bzero(cd, sizeof *cd);
	free(cd);
	return ok;
}
