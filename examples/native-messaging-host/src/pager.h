/*
 * pager.h: shaping daemon answers into browser frames of at most max_frame bytes.
 *
 * Pure functions over jansson values: no I/O, no libr1 (so the unit tests drive them
 * with a stub emitter). Formats are documented in ../README.md.
 */
#ifndef NM_PAGER_H
#define NM_PAGER_H

#include <jansson.h>
#include <stddef.h>

/* Receives one finished frame body; returns 0 to go on, non-zero to stop. */
typedef int (*nm_emit_fn)(void *ctx, const char *body, size_t len);

/* {"jsonrpc":"2.0","id":id,"error":{"code":code,"message":message,"data":{"kind":kind}}}
 * (id NULL → "id":null). Returns a malloc'd string (or NULL when out of memory). */
char *nm_error_body(json_t *id, long long code, const char *kind, const char *message);

/* {"jsonrpc":"2.0","id":id,"error":<error_obj>}; error_obj is borrowed. */
char *nm_error_obj_body(json_t *id, json_t *error_obj);

/* {"jsonrpc":"2.0","id":id,"result":result}; result is borrowed. When it would not
 * fit in max_frame, a -32005 too_large error naming the size is returned instead. */
char *nm_result_body(json_t *id, json_t *result, size_t max_frame);

/* Sends a journal.read result as one or more response frames with the same id, each
 * a complete journal.read result carrying "page":{"index":i,"count":n}; a record
 * that alone would not fit becomes {"seq","epoch","kind","at","too_large":true}.
 * Returns the number of frames emitted, or -1 (out of memory, emitter stopped). */
int nm_send_journal_pages(json_t *id, json_t *result, size_t max_frame, nm_emit_fn emit,
                          void *ctx);

/* The notification frame for one subscription item (the JSON r1_subscription_next
 * returns), tagged with the host's subscription id `sub`:
 *   record → {"jsonrpc":"2.0","method":"$/event","params":{"sub","seq","epoch","kind","at","data"}}
 *   daemon → {"jsonrpc":"2.0","method":"$/daemon","params":{"sub","kind","at","data"}}
 *   reset  → {"jsonrpc":"2.0","method":"$/reset","params":{"sub","epoch","last_good_seq"}}
 * A record whose frame would exceed max_frame is replaced by
 *   {"sub","seq","epoch","kind","at","too_large":true} (no data).
 * Returns a malloc'd string, or NULL when item_json is not a JSON object. */
char *nm_event_body(const char *item_json, long long sub, size_t max_frame);

#endif
