#include "privs.h"

#include <errno.h>
#include <grp.h>
#include <stdbool.h>
#include <linux/capability.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* A name, or a decimal id when no entry has that name. */
static bool numeric_id(const char *s, unsigned long *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno == 0 && *end == '\0' && *out < 0xffffffffUL;
}

int privs_lookup(const char *spec, struct privs *p, char *err, size_t errlen)
{
	char user[64];
	const char *colon = strchr(spec, ':');
	size_t ulen = colon ? (size_t)(colon - spec) : strlen(spec);
	if (ulen == 0 || ulen >= sizeof user || (colon && colon[1] == '\0')) {
		snprintf(err, errlen, "expected USER or USER:GROUP");
		return -EINVAL;
	}
	memcpy(user, spec, ulen);
	user[ulen] = '\0';
	unsigned long id;
	struct passwd *pw = getpwnam(user);
	if (!pw && numeric_id(user, &id))
		pw = getpwuid((uid_t)id);
	if (!pw) {
		snprintf(err, errlen, "no user '%s'", user);
		return -EINVAL;
	}
	p->uid = pw->pw_uid;
	p->gid = pw->pw_gid;
	if (colon) {
		struct group *gr = getgrnam(colon + 1);
		if (!gr && numeric_id(colon + 1, &id))
			gr = getgrgid((gid_t)id);
		if (!gr) {
			snprintf(err, errlen, "no group '%s'", colon + 1);
			return -EINVAL;
		}
		p->gid = gr->gr_gid;
	}
	return 0;
}

/* No capability in any set. */
static int clear_caps(void)
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct d[2];
	memset(d, 0, sizeof d);
	return syscall(SYS_capset, &h, d) == 0 ? 0 : -errno;
}

int privs_drop(const struct privs *p, char *err, size_t errlen)
{
	if (geteuid() == p->uid && getegid() == p->gid)
		return 0; /* started as that user already */
	int rc = 0;
	const char *step = "";
	if (setgroups(1, &p->gid) < 0)
		rc = -errno, step = "setgroups";
	else if (setresgid(p->gid, p->gid, p->gid) < 0)
		rc = -errno, step = "setresgid";
	else if (setresuid(p->uid, p->uid, p->uid) < 0)
		rc = -errno, step = "setresuid";
	if (rc < 0) {
		snprintf(err, errlen, "%s: %s", step, strerror(-rc));
		return rc;
	}
	uid_t r, e, s;
	if (getresuid(&r, &e, &s) < 0 || r != p->uid || e != p->uid || s != p->uid ||
	    setuid(0) == 0) {
		snprintf(err, errlen, "root could be regained after the switch");
		return -EPERM;
	}
	return 0;
}

int privs_drop_all_caps(void)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1L, 0L, 0L, 0L) < 0)
		return -errno;
	return clear_caps();
}
