/*
 * The kernel-only relay (worker/sockmap.c loads it): a stream verdict
 * program on a worker's socket hash.  Every batch of bytes that arrives on
 * a socket of the hash is sent out of its peer, the other socket of the
 * same session, without waking the worker; the bytes are counted per
 * socket so that the access log, the metrics and the idle timer see them.
 * A socket without a peer entry, or held, keeps its bytes (SK_PASS), for
 * the worker to read.  The keys are socket cookies (SO_COOKIE).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* One socket's side of a session: where its bytes go, how many went. */
struct sockmap_peer {
	__u64 peer;  /* the peer socket's cookie */
	__u64 bytes; /* bytes read from this socket and sent to the peer */
	__u64 owner; /* the worker's session (only the worker reads it) */
};

/* Every SOCKMAP_MARK_SHIFT-sized step of a socket's bytes, its cookie goes
 * to the worker through the marks ring, so that the worker looks at the
 * bytes queued for the peer: the kernel sends redirected bytes on without
 * holding the sender back, and a slow reader would otherwise let a fast
 * writer fill memory.  When they pile up, the worker puts the session's
 * sockets in held: from then on their bytes stay with them (SK_PASS, in
 * the socket's own queue, which counts against its receive buffer, so
 * TCP's window closes), and the worker relays them itself. */
#define SOCKMAP_MARK_SHIFT 21

/* The sockets whose bytes the program relays (it is attached to this
 * map), and the sockets it may send to.  A session's sockets go in dests
 * first, then in socks: a byte that arrives on the first socket while the
 * second is being put in finds its way out already. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2); /* set by the loader: two per session */
	__type(key, __u64);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 2); /* as socks */
	__type(key, __u64);
	__type(value, __u64);
} dests SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2); /* as socks */
	__type(key, __u64);
	__type(value, struct sockmap_peer);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 2); /* as socks */
	__type(key, __u64);
	__type(value, __u32);
} held SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} marks SEC(".maps");

/* Attached as BPF_SK_SKB_VERDICT: the verdict without a stream parser. */
SEC("sk_skb")
int relay_verdict(struct __sk_buff *skb)
{
	/* A FIN comes as an empty buffer: sent on, it would fail on the peer
	 * that the worker has shut down by then, and set an error there.  The
	 * worker passes the FIN on itself (shutdown), once the bytes are out. */
	if (skb->len == 0)
		return SK_DROP;
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct sockmap_peer *p = bpf_map_lookup_elem(&peers, &cookie);
	if (!p || bpf_map_lookup_elem(&held, &cookie))
		return SK_PASS;
	/* The verdicts of one socket run under its lock, one at a time. */
	__u64 was = p->bytes;
	p->bytes = was + skb->len;
	if ((was >> SOCKMAP_MARK_SHIFT) != (p->bytes >> SOCKMAP_MARK_SHIFT))
		bpf_ringbuf_output(&marks, &cookie, sizeof cookie, BPF_RB_FORCE_WAKEUP);
	return bpf_sk_redirect_hash(skb, &dests, &p->peer, 0);
}

char _license[] SEC("license") = "GPL";
