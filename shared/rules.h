/*
 * rules: who may reach what.  The parser of the rule lines of the
 * configuration file (client rules, request rules, groups, external
 * addresses; grammar in socks5d.conf(5)), the compiled matcher, the default
 * policy, and the rule set's way through the shared segment.
 *
 * Rules are numbered 1.. in file order (client and request rules
 * together); the first rule that matches decides.  A request no rule
 * matches falls to the default policy: pass, except that a client not
 * itself on loopback may not reach loopback, unspecified, link-local,
 * multicast or broadcast addresses (nor them under the IPv6 forms that
 * deliver to them: NAT64, 6to4 ...; socks5d.conf(5) has the list), nor the
 * proxy's own listening addresses at its SOCKS port.
 *
 * The compiled set is immutable: any number of readers of one process.
 * Compiling allocates; deciding allocates nothing and takes no lock.
 * The shm functions at the end lock the segment's rules mutex.
 */
#ifndef SOCKS5D_RULES_H
#define SOCKS5D_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "settings.h"
#include "shm.h"

#define RULES_MAX SHM_RULES_MAX           /* rules in one set */
#define RULES_TEXT_MAX SHM_RULES_TEXT_MAX /* bytes of rule text, blank lines included */
#define RULES_GROUPS_MAX 256
#define RULES_LIST_MAX 256 /* items in one list: ports, addresses, users */

/* The SOCKS command codes. */
enum rules_cmd {
	RULES_CMD_CONNECT = 1,
	RULES_CMD_BIND = 2,
	RULES_CMD_UDP = 3,
};

enum rules_action {
	RULES_PASS = 0,
	RULES_BLOCK = 1,
	RULES_UNDECIDED = 2, /* only for a name without an address: the addresses decide */
};

/* The rule that decided, as a value: nothing in it points into the set,
 * so it stays usable after a reload frees the set. */
struct rules_match {
	uint8_t action;        /* enum rules_action */
	bool log;              /* the rule says `log` */
	uint32_t number;       /* 1.. among the file's rules; 0: the default policy */
	uint32_t line;         /* its line in the file; 0 for the default policy */
	uint32_t max_sessions; /* `max-sessions N`, 0: none (not enforced here) */
	uint64_t rate_in;      /* `rate IN/OUT`, bytes per second, target to client; 0: none */
	uint64_t rate_out;     /* client to target; 0: none */
	uint64_t limit_ident;  /* the rule's identity for its limits' entry (shared/limits.h):
	                          a non-zero 64-bit hash of its text, limits included; 0:
	                          the default policy */
	uint32_t limit_tag;    /* where that entry is looked for: limit_ident folded to 32
	                          bits, non-zero; 0: the default policy */
	uint8_t via_family;    /* AF_INET, AF_INET6, or 0: no `via` */
	uint8_t via[16];       /* the address (4 or 16 bytes) */
};

/* One decision's question.  dest NULL with a name: the name stage (before
 * resolution; the answer may be RULES_UNDECIDED).  A literal address
 * request gives dest and no name. */
struct rules_request {
	const struct sockaddr *client; /* the client's address (AF_INET or AF_INET6) */
	const char *user;              /* the login, NULL: none (anonymous) */
	uint8_t cmd;                   /* enum rules_cmd */
	uint16_t port;                 /* destination port */
	const char *name;              /* the destination name as requested, or NULL */
	const struct sockaddr *dest;   /* a destination address, or NULL */
};

struct rules;

/* Compile text: lines of the configuration file (rule lines, `group =`,
 * `external =`, comments, blank lines; a line's number is its position).
 * cfg (may be NULL) gives the listening addresses and port that the
 * default policy protects; with a wildcard listener the host's interface
 * addresses are read (getifaddrs) now.  Returns 0 and *out, or -EINVAL
 * with "line N: why" in err (the first error; *nerrors counts them all
 * when not NULL), or -ENOMEM. */
int rules_compile(const char *text, size_t len, const struct settings *cfg, struct rules **out,
                  char *err, size_t errlen, unsigned *nerrors);
void rules_free(struct rules *rs);

/* Does this configuration-file line (trimmed) belong to the rules: a rule,
 * a `group =` or an `external =` line? */
bool rules_is_line(const char *line);

/* A request: the first rule that matches, else the default policy.  Fills
 * *m (always) and returns m->action. */
enum rules_action rules_decide(const struct rules *rs, const struct rules_request *q,
                               struct rules_match *m);
/* A client at accept (client rules; none matching: pass). */
enum rules_action rules_client(const struct rules *rs, const struct sockaddr *client,
                               struct rules_match *m);

/* The source address for an outbound connection of this family under the
 * rule m (its `via`, else `external` of that family).  True, with *out and *len,
 * when there is one. */
bool rules_source(const struct rules *rs, const struct rules_match *m, int family,
                  struct sockaddr_storage *out, socklen_t *len);

/* Listing: the number of rules, and rule i's (0-based) line, whether it is
 * a client rule, and its text as written. */
size_t rules_count(const struct rules *rs);
const char *rules_text(const struct rules *rs, size_t i, uint32_t *line, bool *client);
bool rules_has_client_rules(const struct rules *rs);
/* Rule i's (0-based) action: RULES_PASS or RULES_BLOCK. */
enum rules_action rules_rule_action(const struct rules *rs, size_t i);
/* The default policy in words, naming the SOCKS port whose own addresses
 * it protects (for the listing). */
void rules_default_text(const struct rules *rs, char *out, size_t len);
/* Is name a host name as the rules name one (letters, digits, '-', '_',
 * labels of 1..63, a final dot allowed)?  Rule test's destinations. */
bool rules_valid_name(const char *name);

/* A decision as text: "pass by rule 3 (line 12)", "block by the default
 * policy", ... */
void rules_match_text(const struct rules_match *m, char *out, size_t len);

/* ---- the shared segment ---- */

/* The master, before any worker: the rules mutex and an empty set. */
int rules_shm_init(struct shm_segment *seg);
/* The master publishes a validated text (generation + 1, hit counters
 * cleared).  0 or -E2BIG. */
int rules_shm_publish(struct shm_segment *seg, const char *text, size_t len);
/* A worker: when the published generation differs from *gen, compile it
 * (*out, *gen updated: 1), else 0; a negative errno when it cannot
 * (err says why; the caller keeps its set). */
int rules_shm_load(struct shm_segment *seg, const struct settings *cfg, uint64_t *gen,
                   struct rules **out, char *err, size_t errlen);
/* Count a hit of the rule that decided (m->number > 0), if the set is of
 * the generation in force (a set being replaced counts nothing). */
void rules_shm_hit(struct shm_segment *seg, uint64_t gen, const struct rules_match *m);

#endif
