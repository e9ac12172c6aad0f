#include "names.h"

#include <string.h>

#define NAMES_MAX 255

const char *names_user_problem(const char *name, size_t len)
{
	if (len == 0)
		return "is empty";
	if (len > NAMES_MAX)
		return "is longer than 255 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f)
			return "contains a control byte";
	}
	if (name[0] == ' ' || name[len - 1] == ' ')
		return "begins or ends with a blank";
	return NULL;
}

const char *names_password_problem(const char *pw, size_t len)
{
	if (len == 0)
		return "is empty";
	if (len > NAMES_MAX)
		return "is longer than 255 bytes";
	if (memchr(pw, '\0', len))
		return "contains a NUL byte";
	return NULL;
}
