/*
 * Unit tests of the native-messaging host's framing and paging (frame.c, pager.c),
 * with pipes and a stub emitter standing in for the browser and the daemon.
 */
#define _POSIX_C_SOURCE 200809L
#include <jansson.h>
#include <signal.h>
#include <stdint.h>
#include <unistd.h>

#include "frame.h"
#include "pager.h"

#include "harness.h"

static void write_raw(int fd, const void *p, size_t n) {
    CHECK(write(fd, p, n) == (ssize_t)n);
}

static void test_read_frames_and_eof(void) {
    int p[2];
    REQUIRE(pipe(p) == 0);
    const char *a = "{\"id\":1}";
    uint32_t n = (uint32_t)strlen(a);
    write_raw(p[1], &n, 4);
    write_raw(p[1], a, n);
    uint32_t zero = 0;
    write_raw(p[1], &zero, 4);
    close(p[1]);
    char *out = NULL;
    uint32_t len = 0;
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_OK);
    CHECK(len == n && out && strcmp(out, a) == 0);
    free(out);
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_OK);
    CHECK(len == 0 && out && out[0] == '\0');
    free(out);
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_EOF);
    CHECK(out == NULL);
    close(p[0]);
}

static void test_truncated_prefix_and_body(void) {
    int p[2];
    REQUIRE(pipe(p) == 0);
    write_raw(p[1], "\x01\x02", 2);
    close(p[1]);
    char *out = NULL;
    uint32_t len = 0;
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_TRUNCATED);
    close(p[0]);

    REQUIRE(pipe(p) == 0);
    uint32_t n = 10;
    write_raw(p[1], &n, 4);
    write_raw(p[1], "abc", 3);
    close(p[1]);
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_TRUNCATED);
    CHECK(out == NULL);
    close(p[0]);
}

static void test_oversize_length_is_refused_without_reading(void) {
    int p[2];
    REQUIRE(pipe(p) == 0);
    uint32_t n = NM_MAX_IN + 1;
    write_raw(p[1], &n, 4);
    close(p[1]);
    char *out = NULL;
    uint32_t len = 0;
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_TOO_LARGE);
    CHECK(len == NM_MAX_IN + 1);
    CHECK(out == NULL);
    close(p[0]);
}

static void test_writer_frames_and_limit(void) {
    int p[2];
    REQUIRE(pipe(p) == 0);
    nm_writer w;
    nm_writer_init(&w, p[1]);
    CHECK(nm_write_frame(&w, "{}", 2) == 0);
    char *big = malloc(NM_MAX_OUT + 1);
    REQUIRE(big);
    memset(big, 'x', NM_MAX_OUT + 1);
    CHECK(nm_write_frame(&w, big, NM_MAX_OUT + 1) == -1); /* refused, nothing written */
    free(big);
    CHECK(!atomic_load(&w.broken));
    close(p[1]);
    char *out = NULL;
    uint32_t len = 0;
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_OK);
    CHECK(len == 2 && strcmp(out, "{}") == 0);
    free(out);
    CHECK(nm_read_frame(p[0], NM_MAX_IN, &out, &len) == NM_READ_EOF);
    close(p[0]);
    nm_writer_destroy(&w);
}

static void test_writer_marks_broken_pipe(void) {
    int p[2];
    REQUIRE(pipe(p) == 0);
    close(p[0]);
    /* The host's main ignores SIGPIPE; so does this test. */
    signal(SIGPIPE, SIG_IGN);
    nm_writer w;
    nm_writer_init(&w, p[1]);
    CHECK(nm_write_frame(&w, "{}", 2) == -1);
    CHECK(atomic_load(&w.broken));
    CHECK(nm_write_frame(&w, "{}", 2) == -1);
    close(p[1]);
    nm_writer_destroy(&w);
}

/* ---- pager ---- */

typedef struct {
    json_t *frames; /* parsed frames */
    size_t max_len;
} collector;

static int collect(void *ctx, const char *body, size_t len) {
    collector *c = ctx;
    if (len > c->max_len) c->max_len = len;
    json_error_t e;
    json_t *v = json_loadb(body, len, 0, &e);
    CHECK(v != NULL);
    json_array_append_new(c->frames, v);
    return 0;
}

static json_t *make_records(size_t n, size_t data_len, uint64_t first_seq) {
    json_t *recs = json_array();
    char *text = malloc(data_len + 1);
    memset(text, 'a', data_len);
    text[data_len] = '\0';
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(
            recs, json_pack("{s:I, s:s, s:s, s:s, s:{s:s, s:s}}", "seq", (json_int_t)(first_seq + i),
                            "epoch", "e1", "kind", "session.delta", "at", "2026-01-01T00:00:00.000Z",
                            "data", "stream", "stdout", "text", text));
    }
    free(text);
    return recs;
}

static void test_journal_pages_split_under_limit(void) {
    enum { N = 120 };
    json_t *recs = make_records(N, 10000, 1); /* ~1.2 MB of records: two pages */
    json_t *result = json_pack("{s:o, s:I, s:s, s:b}", "records", recs, "next_seq", (json_int_t)N,
                               "epoch", "e1", "more", 1);
    json_t *id = json_integer(7);
    collector c = {json_array(), 0};
    int n = nm_send_journal_pages(id, result, NM_MAX_OUT, collect, &c);
    CHECK(n >= 2);
    CHECK((size_t)n == json_array_size(c.frames));
    CHECK(c.max_len <= NM_MAX_OUT);
    /* Records arrive complete, in order, once; page markers count up; only the last
     * page keeps the daemon's next_seq/more. */
    uint64_t want = 1;
    for (size_t i = 0; i < json_array_size(c.frames); i++) {
        json_t *f = json_array_get(c.frames, i);
        CHECK(json_integer_value(json_object_get(f, "id")) == 7);
        json_t *r = json_object_get(f, "result");
        json_t *page = json_object_get(r, "page");
        CHECK(json_integer_value(json_object_get(page, "index")) == (json_int_t)i);
        CHECK(json_integer_value(json_object_get(page, "count")) == (json_int_t)n);
        json_t *rs = json_object_get(r, "records");
        for (size_t k = 0; k < json_array_size(rs); k++) {
            CHECK(json_integer_value(json_object_get(json_array_get(rs, k), "seq")) == (json_int_t)want);
            want++;
        }
        CHECK(json_is_true(json_object_get(r, "more")));
        if (i + 1 < json_array_size(c.frames))
            CHECK(json_integer_value(json_object_get(r, "next_seq")) == (json_int_t)(want - 1));
        else
            CHECK(json_integer_value(json_object_get(r, "next_seq")) == N);
    }
    CHECK(want == N + 1);
    json_decref(c.frames);
    json_decref(id);
    json_decref(result);
}

static void test_journal_single_page_and_oversize_record(void) {
    json_t *recs = make_records(2, 10, 1);
    json_array_append_new(recs, json_pack("{s:I, s:s, s:s, s:s, s:{s:s}}", "seq", (json_int_t)3,
                                          "epoch", "e1", "kind", "blob", "at", "t", "data", "text",
                                          ""));
    /* make record 3 bigger than a frame */
    size_t big_n = NM_MAX_OUT + 10;
    char *big = malloc(big_n + 1);
    memset(big, 'b', big_n);
    big[big_n] = '\0';
    json_object_set_new(json_object_get(json_array_get(recs, 2), "data"), "text", json_string(big));
    free(big);
    json_t *result = json_pack("{s:o, s:I, s:s, s:b}", "records", recs, "next_seq", (json_int_t)3,
                               "epoch", "e1", "more", 0);
    json_t *id = json_string("abc");
    collector c = {json_array(), 0};
    int n = nm_send_journal_pages(id, result, NM_MAX_OUT, collect, &c);
    CHECK(n == 1);
    json_t *r = json_object_get(json_array_get(c.frames, 0), "result");
    json_t *rs = json_object_get(r, "records");
    CHECK(json_array_size(rs) == 3);
    json_t *stub = json_array_get(rs, 2);
    CHECK(json_is_true(json_object_get(stub, "too_large")));
    CHECK(json_integer_value(json_object_get(stub, "seq")) == 3);
    CHECK(strcmp(json_string_value(json_object_get(stub, "kind")), "blob") == 0);
    CHECK(json_object_get(stub, "data") == NULL);
    CHECK(json_is_false(json_object_get(r, "more")));
    CHECK(json_integer_value(json_object_get(json_object_get(r, "page"), "count")) == 1);
    json_decref(c.frames);
    json_decref(id);
    json_decref(result);
}

static void test_event_body_shapes_and_too_large(void) {
    char *s = nm_event_body("{\"type\":\"record\",\"seq\":4,\"epoch\":\"e\",\"kind\":\"tool.end\",\"at\":\"t\",\"data\":{\"ok\":true}}", 9, NM_MAX_OUT);
    REQUIRE(s);
    json_error_t e;
    json_t *v = json_loads(s, 0, &e);
    free(s);
    CHECK(strcmp(json_string_value(json_object_get(v, "method")), "$/event") == 0);
    json_t *p = json_object_get(v, "params");
    CHECK(json_integer_value(json_object_get(p, "sub")) == 9);
    CHECK(json_integer_value(json_object_get(p, "seq")) == 4);
    CHECK(json_object_get(p, "type") == NULL);
    CHECK(json_is_true(json_object_get(json_object_get(p, "data"), "ok")));
    json_decref(v);

    s = nm_event_body("{\"type\":\"daemon\",\"kind\":\"daemon.stopping\",\"at\":\"t\",\"data\":{}}", 1, NM_MAX_OUT);
    v = json_loads(s, 0, &e);
    free(s);
    CHECK(strcmp(json_string_value(json_object_get(v, "method")), "$/daemon") == 0);
    json_decref(v);

    s = nm_event_body("{\"type\":\"reset\",\"epoch\":\"e2\",\"last_good_seq\":3}", 1, NM_MAX_OUT);
    v = json_loads(s, 0, &e);
    free(s);
    CHECK(strcmp(json_string_value(json_object_get(v, "method")), "$/reset") == 0);
    json_decref(v);

    /* An event over the limit keeps its identity and loses its data. */
    json_t *big = json_pack("{s:s, s:I, s:s, s:s, s:s, s:{s:s}}", "type", "record", "seq", (json_int_t)5,
                            "epoch", "e", "kind", "session.delta", "at", "t", "data", "text", "");
    char *text = malloc(2000 + 1);
    memset(text, 'z', 2000);
    text[2000] = '\0';
    json_object_set_new(json_object_get(big, "data"), "text", json_string(text));
    free(text);
    char *item = json_dumps(big, JSON_COMPACT);
    json_decref(big);
    s = nm_event_body(item, 2, 1000); /* a 1000-byte limit forces the stub */
    free(item);
    REQUIRE(s);
    CHECK(strlen(s) <= 1000);
    v = json_loads(s, 0, &e);
    free(s);
    p = json_object_get(v, "params");
    CHECK(json_is_true(json_object_get(p, "too_large")));
    CHECK(json_integer_value(json_object_get(p, "seq")) == 5);
    CHECK(strcmp(json_string_value(json_object_get(p, "kind")), "session.delta") == 0);
    CHECK(json_object_get(p, "data") == NULL);
    json_decref(v);

    CHECK(nm_event_body("not json", 1, NM_MAX_OUT) == NULL);
}

static void test_result_too_large_becomes_error(void) {
    json_t *result = json_pack("{s:s}", "x", "0123456789012345678901234567890123456789");
    json_t *id = json_integer(3);
    char *s = nm_result_body(id, result, 40);
    REQUIRE(s);
    json_error_t e;
    json_t *v = json_loads(s, 0, &e);
    free(s);
    json_t *err = json_object_get(v, "error");
    CHECK(json_integer_value(json_object_get(err, "code")) == -32005);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(err, "data"), "kind")), "too_large") == 0);
    json_decref(v);
    json_decref(id);
    json_decref(result);
}

static const test_case TESTS[] = {
    {"read_frames_and_eof", test_read_frames_and_eof},
    {"truncated_prefix_and_body", test_truncated_prefix_and_body},
    {"oversize_length_is_refused_without_reading", test_oversize_length_is_refused_without_reading},
    {"writer_frames_and_limit", test_writer_frames_and_limit},
    {"writer_marks_broken_pipe", test_writer_marks_broken_pipe},
    {"journal_pages_split_under_limit", test_journal_pages_split_under_limit},
    {"journal_single_page_and_oversize_record", test_journal_single_page_and_oversize_record},
    {"event_body_shapes_and_too_large", test_event_body_shapes_and_too_large},
    {"result_too_large_becomes_error", test_result_too_large_becomes_error},
};

H_MAIN("nm_unit", TESTS)
