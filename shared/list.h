/*
 * list: the one intrusive doubly-linked list of the tree (after nginx's
 * ngx_queue_t).  A struct list_node is embedded in its owner; the owner is
 * found back with list_entry() (container_of), never by casting a first
 * member.  A head is a node of its own that links to itself when empty.
 * An unlinked node has next == NULL, so list_linked() tells whether it is
 * on a list.  Header only; no allocation; the caller owns the locking.
 */
#ifndef SOCKS5D_LIST_H
#define SOCKS5D_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_node {
	struct list_node *prev, *next;
};

/* The struct of type `type` whose member `member` is at ptr. */
#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))
#define list_entry(node, type, member) container_of(node, type, member)

static inline void list_init(struct list_node *head)
{
	head->prev = head->next = head;
}

static inline bool list_empty(const struct list_node *head)
{
	return head->next == head;
}

static inline bool list_linked(const struct list_node *n)
{
	return n->next != NULL;
}

static inline void list_insert_after(struct list_node *pos, struct list_node *n)
{
	n->prev = pos;
	n->next = pos->next;
	pos->next->prev = n;
	pos->next = n;
}

static inline void list_insert_head(struct list_node *head, struct list_node *n)
{
	list_insert_after(head, n);
}

static inline void list_insert_tail(struct list_node *head, struct list_node *n)
{
	list_insert_after(head->prev, n);
}

/* Unlink n (which must be linked); it reads as unlinked afterwards. */
static inline void list_remove(struct list_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = NULL;
}

/* Walk the nodes; `pos` must not be removed inside the loop body (use
 * list_foreach_safe for that). */
#define list_foreach(pos, head) for ((pos) = (head)->next; (pos) != (head); (pos) = (pos)->next)
#define list_foreach_reverse(pos, head)                                                           \
	for ((pos) = (head)->prev; (pos) != (head); (pos) = (pos)->prev)
/* The body may remove `pos` (not `tmp`). */
#define list_foreach_safe(pos, tmp, head)                                                         \
	for ((pos) = (head)->next, (tmp) = (pos)->next; (pos) != (head); (pos) = (tmp), (tmp) = (pos)->next)

#endif
