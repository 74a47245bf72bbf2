/* pager.c: see pager.h. */
#define _POSIX_C_SOURCE 200809L
#include "pager.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Frames are compact JSON; jansson's default would pretty-print. */
#define DUMP_FLAGS (JSON_COMPACT | JSON_ENCODE_ANY)

static json_t *id_or_null(json_t *id) { return id ? json_incref(id) : json_null(); }

static char *envelope(json_t *id, const char *key, json_t *value) {
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "jsonrpc", json_string("2.0"));
    json_object_set_new(o, "id", id_or_null(id));
    json_object_set(o, key, value);
    char *s = json_dumps(o, DUMP_FLAGS);
    json_decref(o);
    return s;
}

char *nm_error_body(json_t *id, long long code, const char *kind, const char *message) {
    json_t *err = json_pack("{s:I, s:s, s:{s:s}}", "code", (json_int_t)code, "message",
                            message ? message : "", "data", "kind", kind ? kind : "internal");
    if (!err) return NULL;
    char *s = envelope(id, "error", err);
    json_decref(err);
    return s;
}

char *nm_error_obj_body(json_t *id, json_t *error_obj) { return envelope(id, "error", error_obj); }

char *nm_result_body(json_t *id, json_t *result, size_t max_frame) {
    char *s = envelope(id, "result", result);
    if (s && strlen(s) > max_frame) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "the result is %zu bytes, over the %zu-byte limit of a native message",
                 strlen(s), max_frame);
        free(s);
        s = nm_error_body(id, -32005, "too_large", msg);
    }
    return s;
}

/* {"seq","epoch","kind","at"} copied from a record, plus too_large:true. */
static json_t *too_large_stub(json_t *rec) {
    json_t *stub = json_object();
    const char *keys[] = {"seq", "epoch", "kind", "at"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(rec, keys[i]);
        if (v) json_object_set(stub, keys[i], v);
    }
    json_object_set_new(stub, "too_large", json_true());
    return stub;
}

static size_t dumped_len(json_t *v) {
    char *s = json_dumps(v, DUMP_FLAGS);
    if (!s) return (size_t)-1;
    size_t n = strlen(s);
    free(s);
    return n;
}

/* One page's result: the original result's fields, this page's records, and the
 * page marker. Non-final pages say more:true and next_seq = their last record's seq,
 * so each frame is by itself a consistent journal.read result. */
static json_t *page_result(json_t *result, json_t *records, size_t index, size_t count) {
    json_t *r = json_copy(result); /* shallow: shares the field values */
    if (!r) return NULL;
    json_object_set(r, "records", records);
    json_object_set_new(r, "page", json_pack("{s:I, s:I}", "index", (json_int_t)index, "count",
                                             (json_int_t)count));
    if (index + 1 < count) {
        json_object_set_new(r, "more", json_true());
        size_t n = json_array_size(records);
        json_t *last = n ? json_object_get(json_array_get(records, n - 1), "seq") : NULL;
        if (last) json_object_set(r, "next_seq", last);
    }
    return r;
}

int nm_send_journal_pages(json_t *id, json_t *result, size_t max_frame, nm_emit_fn emit,
                          void *ctx) {
    json_t *records = json_object_get(result, "records");
    if (!json_is_array(records)) {
        char *s = nm_result_body(id, result, max_frame);
        if (!s) return -1;
        int stop = emit(ctx, s, strlen(s));
        free(s);
        return stop ? -1 : 1;
    }
    /* Room left for records: the frame with an empty record list and the largest
     * page marker and next_seq a page can get, plus slack for the commas. */
    json_t *empty = json_array();
    json_t *probe = page_result(result, empty, 0, 1);
    json_object_set_new(probe, "page",
                        json_pack("{s:I, s:I}", "index", (json_int_t)999999999,
                                  "count", (json_int_t)999999999));
    json_object_set_new(probe, "more", json_true());
    json_object_set_new(probe, "next_seq", json_integer((json_int_t)9223372036854775807LL));
    char *probe_s = envelope(id, "result", probe);
    size_t overhead = probe_s ? strlen(probe_s) + 16 : max_frame;
    free(probe_s);
    json_decref(probe);
    json_decref(empty);
    if (overhead >= max_frame) {
        char *s = nm_error_body(id, -32005, "too_large", "the journal.read result has no room for records");
        if (!s) return -1;
        emit(ctx, s, strlen(s));
        free(s);
        return -1;
    }
    size_t budget = max_frame - overhead;

    /* Split into pages. */
    json_t *pages = json_array();
    json_t *cur = json_array();
    size_t cur_len = 0;
    size_t n = json_array_size(records);
    for (size_t i = 0; i < n; i++) {
        json_t *rec = json_array_get(records, i);
        size_t len = dumped_len(rec);
        json_t *item = json_incref(rec);
        if (len > budget) {
            json_decref(item);
            item = too_large_stub(rec);
            len = dumped_len(item);
        }
        size_t need = len + (json_array_size(cur) ? 1 : 0);
        if (json_array_size(cur) && cur_len + need > budget) {
            json_array_append_new(pages, cur);
            cur = json_array();
            cur_len = 0;
            need = len;
        }
        json_array_append_new(cur, item);
        cur_len += need;
    }
    json_array_append_new(pages, cur);

    size_t count = json_array_size(pages);
    int sent = 0;
    for (size_t i = 0; i < count; i++) {
        json_t *r = page_result(result, json_array_get(pages, i), i, count);
        char *s = r ? envelope(id, "result", r) : NULL;
        json_decref(r);
        if (!s) {
            sent = -1;
            break;
        }
        int stop = emit(ctx, s, strlen(s));
        free(s);
        if (stop) {
            sent = -1;
            break;
        }
        sent++;
    }
    json_decref(pages);
    return sent;
}

char *nm_event_body(const char *item_json, long long sub, size_t max_frame) {
    json_error_t jerr;
    json_t *item = json_loads(item_json, 0, &jerr);
    if (!json_is_object(item)) {
        json_decref(item);
        return NULL;
    }
    const char *type = json_string_value(json_object_get(item, "type"));
    const char *method = "$/event";
    if (type && strcmp(type, "daemon") == 0) method = "$/daemon";
    if (type && strcmp(type, "reset") == 0) method = "$/reset";

    /* params = the item without its "type" tag, with "sub" first. */
    json_t *params = json_object();
    json_object_set_new(params, "sub", json_integer((json_int_t)sub));
    json_object_del(item, "type");
    json_object_update(params, item);

    json_t *note = json_pack("{s:s, s:s, s:O}", "jsonrpc", "2.0", "method", method, "params", params);
    char *s = json_dumps(note, DUMP_FLAGS);
    if (s && strlen(s) > max_frame) {
        free(s);
        json_t *stub = too_large_stub(item);
        json_t *small = json_object();
        json_object_set_new(small, "sub", json_integer((json_int_t)sub));
        json_object_update(small, stub);
        json_object_set(note, "params", small);
        s = json_dumps(note, DUMP_FLAGS);
        json_decref(small);
        json_decref(stub);
    }
    json_decref(note);
    json_decref(params);
    json_decref(item);
    return s;
}
