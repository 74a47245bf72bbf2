/*
 * test_r1.c: every libr1 function from C, success and error paths.
 *
 * Built twice by scripts/test-c.sh (against libr1.so and libr1.a) with
 * -std=c11 -Wall -Wextra -Werror. Every home and work directory is a fresh mkdtemp
 * directory under /tmp; the real ~/.r1 is never touched. A shared embedded daemon
 * (r1_daemon_start) serves most client tests; tests that stop a daemon start their
 * own. The auto-spawn test needs R1_BIN (the script points it at target/debug/r1).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "r1.h"
#include "harness.h"

/* ---- helpers ------------------------------------------------------------------ */

#define MAX_DIRS 32
static char *g_dirs[MAX_DIRS];
static int g_ndirs;

/* A fresh private directory, removed at teardown. */
static const char *tmpdir(const char *tag) {
    char tmpl[128];
    snprintf(tmpl, sizeof tmpl, "/tmp/r1c-%s-XXXXXX", tag);
    char *d = mkdtemp(tmpl);
    if (!d) {
        perror("mkdtemp");
        exit(2);
    }
    char *copy = strdup(d);
    if (g_ndirs < MAX_DIRS) g_dirs[g_ndirs++] = copy;
    return copy;
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void rm_rf(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static json_t *parse(const char *s) {
    json_error_t e;
    json_t *v = json_loads(s ? s : "", JSON_DECODE_ANY, &e);
    if (!v) fprintf(stderr, "    not JSON: %s (%s)\n", s ? s : "(null)", e.text);
    return v;
}

/* A string member, or "" */
static const char *jstr(json_t *o, const char *k) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static json_int_t jint(json_t *o, const char *k) { return json_integer_value(json_object_get(o, k)); }

/* Calls a method and returns the parsed result (NULL on failure, reported). */
static json_t *call_json(R1Client *c, const char *method, const char *params) {
    char *out = NULL;
    R1Status st = r1_client_call(c, method, params, 0, &out);
    if (st != R1_STATUS_OK) {
        fprintf(stderr, "    %s failed with %d: %s\n", method, (int)st, r1_last_error_message());
        h_failed_checks++;
        return NULL;
    }
    json_t *v = parse(out);
    r1_string_free(out);
    return v;
}

/* The JSON-RPC error code in the last error (after R1_STATUS_RPC), or 0. */
static json_int_t last_rpc_code(void) {
    json_t *e = parse(r1_last_error_message());
    json_int_t code = e ? jint(e, "code") : 0;
    json_decref(e);
    return code;
}

static char *dial_opts_for(const char *home, int spawn) {
    static char buf[512];
    snprintf(buf, sizeof buf, "{\"home\":\"%s\",\"spawn\":%s,\"timeout_ms\":10000}", home,
             spawn ? "true" : "false");
    return buf;
}

/* ---- the shared embedded daemon ----------------------------------------------- */

static R1Daemon *g_daemon;
static R1Client *g_client;
static const char *g_home;

static R1Client *fixture(void) {
    if (g_client) return g_client;
    g_home = tmpdir("home");
    char cfg[512];
    snprintf(cfg, sizeof cfg, "{\"home\":\"%s\",\"tcp\":false,\"shutdown_grace_ms\":2000}", g_home);
    R1Status st = r1_daemon_start(cfg, &g_daemon);
    if (st != R1_STATUS_OK) {
        fprintf(stderr, "    fixture: r1_daemon_start: %s\n", r1_last_error_message());
        return NULL;
    }
    st = r1_client_dial(dial_opts_for(g_home, 0), &g_client);
    if (st != R1_STATUS_OK) {
        fprintf(stderr, "    fixture: r1_client_dial: %s\n", r1_last_error_message());
        return NULL;
    }
    return g_client;
}

static void teardown(void) {
    r1_client_free(g_client);
    g_client = NULL;
    if (g_daemon && r1_daemon_stop(g_daemon) != R1_STATUS_OK)
        fprintf(stderr, "teardown: r1_daemon_stop: %s\n", r1_last_error_message());
    g_daemon = NULL;
    for (int i = 0; i < g_ndirs; i++) {
        rm_rf(g_dirs[i]);
        free(g_dirs[i]);
    }
    g_ndirs = 0;
}

/* Starts a shell session in a fresh work directory; returns its id (malloc'd). */
static char *start_session(R1Client *c) {
    const char *wd = tmpdir("work");
    char params[512];
    snprintf(params, sizeof params, "{\"workdir\":\"%s\",\"name\":\"c-test\"}", wd);
    json_t *r = call_json(c, "session.start", params);
    if (!r) return NULL;
    char *id = strdup(jstr(r, "session_id"));
    json_decref(r);
    return id;
}

static R1Status send_text(R1Client *c, const char *sid, const char *text) {
    json_t *p = json_pack("{s:s, s:s}", "session_id", sid, "text", text);
    char *ps = json_dumps(p, JSON_COMPACT);
    json_decref(p);
    char *out = NULL;
    R1Status st = r1_client_call(c, "session.send", ps, 0, &out);
    free(ps);
    r1_string_free(out);
    return st;
}

/* Reads a subscription until a record of `kind` arrives (or 20 s pass). Appends the
 * text of stdout deltas to `out` (if given). Returns that record, or NULL. */
static json_t *read_until(R1Subscription *s, const char *kind, char *out, size_t out_len) {
    double deadline = now_s() + 20;
    while (now_s() < deadline) {
        char *ev = NULL;
        R1Status st = r1_subscription_next(s, 500, &ev);
        if (st == R1_STATUS_TIMEOUT) continue;
        if (st != R1_STATUS_OK) {
            fprintf(stderr, "    subscription ended with %d: %s\n", (int)st, r1_last_error_message());
            return NULL;
        }
        json_t *v = parse(ev);
        r1_string_free(ev);
        if (!v) return NULL;
        if (out && strcmp(jstr(v, "kind"), "session.delta") == 0) {
            json_t *d = json_object_get(v, "data");
            if (strcmp(jstr(d, "stream"), "stdout") == 0)
                strncat(out, jstr(d, "text"), out_len - strlen(out) - 1);
        }
        if (strcmp(jstr(v, "kind"), kind) == 0) return v;
        json_decref(v);
    }
    fprintf(stderr, "    no %s within 20 s\n", kind);
    return NULL;
}

static char *journal_path(const char *home, const char *sid) {
    char *p = malloc(1024);
    snprintf(p, 1024, "%s/sessions/%s/journal.ndjson", home, sid);
    return p;
}

/* Writes a syntactically valid daemon.json whose pid is not running. */
static void write_stale_discovery(const char *home) {
    char path[512];
    snprintf(path, sizeof path, "%s/daemon.json", home);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return;
    const char *body =
        "{\"pid\":2147483600,\"version\":\"0.1.0\",\"protocol_version\":1,"
        "\"instance_id\":\"00000000000000000000000000000000\","
        "\"sock_path\":\"/tmp/r1c-no-such-dir/r1.sock\",\"host\":\"127.0.0.1\",\"port\":1,"
        "\"token\":\"0000000000000000000000000000000000000000000000000000000000000000\","
        "\"cert_fingerprint\":null,\"started_at\":\"2026-01-01T00:00:00Z\"}\n";
    if (write(fd, body, strlen(body)) < 0) perror("write");
    close(fd);
}

/* ---- version, strings, last error, NULLs -------------------------------------- */

static void test_version_and_macros(void) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", R1_VERSION_MAJOR, R1_VERSION_MINOR, R1_VERSION_PATCH);
    CHECK(strcmp(r1_version(), want) == 0);
    CHECK(strcmp(r1_version(), R1_VERSION_STRING) == 0);
    CHECK(R1_SINCE_NOW == UINT64_MAX);
    CHECK(R1_STATUS_OK == 0 && R1_STATUS_NULL_ARGUMENT == 1 && R1_STATUS_INVALID_ARGUMENT == 2);
    CHECK(R1_STATUS_NOT_FOUND == 3 && R1_STATUS_UNSAFE == 4 && R1_STATUS_IO == 5);
    CHECK(R1_STATUS_PROTOCOL == 6 && R1_STATUS_RPC == 7 && R1_STATUS_TIMEOUT == 8);
    CHECK(R1_STATUS_CLOSED == 9 && R1_STATUS_AUTH == 10 && R1_STATUS_JOURNAL_DAMAGED == 11);
    CHECK(R1_STATUS_PANIC == 99);
}

static void test_free_functions_accept_null(void) {
    r1_string_free(NULL);
    r1_client_free(NULL);
    r1_subscription_close(NULL);
    r1_subscription_free(NULL);
    r1_journal_free(NULL);
    CHECK(r1_last_error_message() != NULL);
}

/* Every status-returning function refuses a NULL required pointer and leaves *out
 * NULL; the last error names the argument. */
static void test_null_arguments(void) {
    char *s = (char *)"sentinel";
    CHECK_STATUS(r1_discover(NULL, NULL), R1_STATUS_NULL_ARGUMENT);
    CHECK(strstr(r1_last_error_message(), "discovery_json_out") != NULL);
    CHECK_STATUS(r1_client_dial("{}", NULL), R1_STATUS_NULL_ARGUMENT);

    R1Client *c = fixture();
    REQUIRE(c);
    s = (char *)"sentinel";
    CHECK_STATUS(r1_client_call(NULL, "daemon.info", NULL, 0, &s), R1_STATUS_NULL_ARGUMENT);
    CHECK(s == NULL);
    s = (char *)"sentinel";
    CHECK_STATUS(r1_client_call(c, NULL, NULL, 0, &s), R1_STATUS_NULL_ARGUMENT);
    CHECK(s == NULL);
    CHECK(strstr(r1_last_error_message(), "method") != NULL);
    CHECK_STATUS(r1_client_call(c, "daemon.info", NULL, 0, NULL), R1_STATUS_NULL_ARGUMENT);

    R1Subscription *sub = (R1Subscription *)&s;
    CHECK_STATUS(r1_client_subscribe(NULL, NULL, 0, &sub), R1_STATUS_NULL_ARGUMENT);
    CHECK(sub == NULL);
    CHECK_STATUS(r1_client_subscribe(c, NULL, 0, NULL), R1_STATUS_NULL_ARGUMENT);
    s = (char *)"sentinel";
    CHECK_STATUS(r1_subscription_next(NULL, 0, &s), R1_STATUS_NULL_ARGUMENT);
    CHECK(s == NULL);
    CHECK_STATUS(r1_subscription_reply(NULL, &s), R1_STATUS_NULL_ARGUMENT);

    CHECK_STATUS(r1_daemon_start("{}", NULL), R1_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(r1_daemon_stop(NULL), R1_STATUS_NULL_ARGUMENT);

    R1Journal *j = (R1Journal *)&s;
    CHECK_STATUS(r1_journal_open(NULL, &j), R1_STATUS_NULL_ARGUMENT);
    CHECK(j == NULL);
    CHECK_STATUS(r1_journal_open("/tmp/x", NULL), R1_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(r1_journal_seek(NULL, 0), R1_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(r1_journal_next(NULL, &s), R1_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(r1_journal_next_wait(NULL, 0, &s), R1_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(r1_journal_verify(NULL, &s), R1_STATUS_NULL_ARGUMENT);

    /* A success clears the message. */
    char *out = NULL;
    CHECK_STATUS(r1_client_call(c, "daemon.info", NULL, 0, &out), R1_STATUS_OK);
    r1_string_free(out);
    CHECK(strcmp(r1_last_error_message(), "") == 0);
}

static void *other_thread_error(void *arg) {
    (void)arg;
    char *out = NULL;
    r1_discover("/tmp/r1c-definitely-not-a-home", &out);
    return strdup(r1_last_error_message());
}

static void test_last_error_is_per_thread(void) {
    char *out = NULL;
    CHECK_STATUS(r1_discover(NULL, NULL), R1_STATUS_NULL_ARGUMENT);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, other_thread_error, NULL) == 0);
    void *msg = NULL;
    pthread_join(t, &msg);
    CHECK(msg && strstr(msg, "r1c-definitely-not-a-home") != NULL);
    free(msg);
    /* This thread still has its own message. */
    CHECK(strstr(r1_last_error_message(), "discovery_json_out") != NULL);
    (void)out;
}

/* ---- discovery and dial ------------------------------------------------------- */

static void test_discover_missing(void) {
    const char *home = tmpdir("empty");
    char *out = (char *)"sentinel";
    CHECK_STATUS(r1_discover(home, &out), R1_STATUS_NOT_FOUND);
    CHECK(out == NULL);
    CHECK(strstr(r1_last_error_message(), "daemon.json") != NULL);
}

static void test_discover_stale(void) {
    const char *home = tmpdir("stale");
    write_stale_discovery(home);
    char *out = NULL;
    CHECK_STATUS(r1_discover(home, &out), R1_STATUS_NOT_FOUND);
    CHECK(strstr(r1_last_error_message(), "stale") != NULL);
    CHECK(out == NULL);
}

static void test_discover_unsafe_mode(void) {
    const char *home = tmpdir("unsafe");
    write_stale_discovery(home);
    char path[512];
    snprintf(path, sizeof path, "%s/daemon.json", home);
    REQUIRE(chmod(path, 0644) == 0);
    char *out = NULL;
    CHECK_STATUS(r1_discover(home, &out), R1_STATUS_UNSAFE);
    CHECK(strstr(r1_last_error_message(), "chmod 600") != NULL);
}

static void test_discover_live_daemon(void) {
    REQUIRE(fixture());
    char *out = NULL;
    REQUIRE_STATUS(r1_discover(g_home, &out), R1_STATUS_OK);
    json_t *d = parse(out);
    r1_string_free(out);
    REQUIRE(d);
    CHECK(jint(d, "pid") == (json_int_t)getpid());
    CHECK(jint(d, "protocol_version") == 1);
    CHECK(strlen(jstr(d, "token")) == 64);
    CHECK(strlen(jstr(d, "sock_path")) > 0);
    json_decref(d);
}

static void test_dial_no_daemon_without_spawn(void) {
    const char *home = tmpdir("nodaemon");
    R1Client *c = (R1Client *)&home;
    CHECK_STATUS(r1_client_dial(dial_opts_for(home, 0), &c), R1_STATUS_NOT_FOUND);
    CHECK(c == NULL);
    r1_client_free(c);
}

static void test_dial_stale_without_spawn(void) {
    const char *home = tmpdir("stale2");
    write_stale_discovery(home);
    R1Client *c = NULL;
    CHECK_STATUS(r1_client_dial(dial_opts_for(home, 0), &c), R1_STATUS_NOT_FOUND);
    CHECK(c == NULL);
    CHECK(strstr(r1_last_error_message(), "stale") != NULL ||
          strstr(r1_last_error_message(), "not running") != NULL);
}

static void test_dial_bad_options(void) {
    R1Client *c = NULL;
    CHECK_STATUS(r1_client_dial("{not json", &c), R1_STATUS_INVALID_ARGUMENT);
    CHECK(c == NULL);
    CHECK_STATUS(r1_client_dial("{\"spwan\":false}", &c), R1_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(r1_last_error_message(), "spwan") != NULL);
    CHECK_STATUS(r1_client_dial("{\"timeout_ms\":\"soon\"}", &c), R1_STATUS_INVALID_ARGUMENT);
    CHECK(c == NULL);
}

/* ---- embedded daemon ---------------------------------------------------------- */

static void test_daemon_start_bad_config(void) {
    R1Daemon *d = NULL;
    CHECK_STATUS(r1_daemon_start("[1,2", &d), R1_STATUS_INVALID_ARGUMENT);
    CHECK(d == NULL);
    CHECK_STATUS(r1_daemon_start("{\"hmoe\":\"/tmp\"}", &d), R1_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(r1_daemon_start("{\"unix\":false,\"tcp\":false}", &d), R1_STATUS_INVALID_ARGUMENT);
    CHECK(d == NULL);
}

static void test_daemon_start_and_stop(void) {
    const char *home = tmpdir("embed");
    char cfg[512];
    snprintf(cfg, sizeof cfg, "{\"home\":\"%s\",\"shutdown_grace_ms\":1000,\"worker_threads\":1}", home);
    R1Daemon *d = NULL;
    REQUIRE_STATUS(r1_daemon_start(cfg, &d), R1_STATUS_OK);
    REQUIRE(d);

    /* A second daemon on the same home is refused with the lock message. */
    R1Daemon *d2 = NULL;
    CHECK_STATUS(r1_daemon_start(cfg, &d2), R1_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(r1_last_error_message(), "already running") != NULL);
    CHECK(d2 == NULL);

    char *out = NULL;
    CHECK_STATUS(r1_discover(home, &out), R1_STATUS_OK);
    json_t *disc = parse(out);
    r1_string_free(out);
    CHECK(disc && jint(disc, "pid") == (json_int_t)getpid());
    CHECK(disc && jint(disc, "port") > 0); /* tcp defaults to on */
    json_decref(disc);

    R1Client *c = NULL;
    CHECK_STATUS(r1_client_dial(dial_opts_for(home, 0), &c), R1_STATUS_OK);
    json_t *info = c ? call_json(c, "daemon.info", NULL) : NULL;
    CHECK(info && jint(info, "pid") == (json_int_t)getpid());
    json_decref(info);
    r1_client_free(c);

    CHECK_STATUS(r1_daemon_stop(d), R1_STATUS_OK);
    out = NULL;
    CHECK_STATUS(r1_discover(home, &out), R1_STATUS_NOT_FOUND); /* discovery removed */
    c = NULL;
    CHECK_STATUS(r1_client_dial(dial_opts_for(home, 0), &c), R1_STATUS_NOT_FOUND);
    r1_client_free(c);
}

/* ---- calls -------------------------------------------------------------------- */

static void test_call_bad_params_json(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *out = (char *)"sentinel";
    CHECK_STATUS(r1_client_call(c, "session.list", "{state:", 0, &out), R1_STATUS_INVALID_ARGUMENT);
    CHECK(out == NULL);
    CHECK(strstr(r1_last_error_message(), "params_json") != NULL);
    CHECK_STATUS(r1_client_call(c, "session.list", "42", 0, &out), R1_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(r1_client_call(c, "session.list", "{}", 5000, &out), R1_STATUS_OK);
    r1_string_free(out);
}

static void test_call_rpc_error_unknown_session(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *out = (char *)"sentinel";
    CHECK_STATUS(r1_client_call(c, "session.get", "{\"session_id\":\"sess_00000000-0000-4000-8000-000000000000\"}", 0, &out),
                 R1_STATUS_RPC);
    CHECK(out == NULL);
    json_t *err = parse(r1_last_error_message());
    REQUIRE(err);
    CHECK(jint(err, "code") == -32001);
    CHECK(strcmp(jstr(json_object_get(err, "data"), "kind"), "not_found") == 0);
    CHECK(strlen(jstr(err, "message")) > 0);
    json_decref(err);
}

static void test_call_unknown_method(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *out = NULL;
    CHECK_STATUS(r1_client_call(c, "no.such_method", NULL, 0, &out), R1_STATUS_RPC);
    CHECK(last_rpc_code() == -32601);
    CHECK_STATUS(r1_client_call(c, "session.start", "{\"workdir\":\"relative/dir\"}", 0, &out), R1_STATUS_RPC);
    CHECK(last_rpc_code() == -32602);
}

static void *call_many(void *arg) {
    R1Client *c = arg;
    long ok = 0;
    for (int i = 0; i < 25; i++) {
        char *out = NULL;
        if (r1_client_call(c, "daemon.info", NULL, 0, &out) == R1_STATUS_OK) ok++;
        r1_string_free(out);
    }
    return (void *)ok;
}

static void test_client_shared_between_threads(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    pthread_t t[4];
    for (int i = 0; i < 4; i++) REQUIRE(pthread_create(&t[i], NULL, call_many, c) == 0);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        total += (long)r;
    }
    CHECK(total == 100);
}

/* ---- sessions and subscriptions ----------------------------------------------- */

static void test_session_round_trip(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = start_session(c);
    REQUIRE(sid && strncmp(sid, "sess_", 5) == 0);
    R1Subscription *s = NULL;
    CHECK_STATUS(r1_client_subscribe(c, sid, 0, &s), R1_STATUS_OK);
    if (s) {
        CHECK_STATUS(send_text(c, sid, "echo hello-from-c"), R1_STATUS_OK);
        char text[4096] = "";
        json_t *end = read_until(s, "tool.end", text, sizeof text);
        CHECK(end != NULL);
        CHECK(strstr(text, "hello-from-c") != NULL);
        if (end) {
            CHECK(strcmp(jstr(end, "type"), "record") == 0);
            CHECK(json_is_true(json_object_get(json_object_get(end, "data"), "ok")));
            CHECK(jint(end, "seq") > 1);
            CHECK(strlen(jstr(end, "epoch")) > 0);
        }
        json_decref(end);
        r1_subscription_free(s);
    }
    free(sid);
}

static void test_subscription_reply(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = start_session(c);
    REQUIRE(sid);
    R1Subscription *s = NULL;
    REQUIRE_STATUS(r1_client_subscribe(c, sid, R1_SINCE_NOW, &s), R1_STATUS_OK);
    char *out = NULL;
    CHECK_STATUS(r1_subscription_reply(s, &out), R1_STATUS_OK);
    json_t *r = parse(out);
    r1_string_free(out);
    CHECK(r && json_is_integer(json_object_get(r, "sub")));
    CHECK(r && jint(r, "current_seq") >= 1); /* session.created at least */
    CHECK(r && strlen(jstr(r, "epoch")) > 0);
    json_decref(r);
    r1_subscription_free(s);
    free(sid);
}

static void test_subscription_next_timeout(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = start_session(c);
    REQUIRE(sid);
    R1Subscription *s = NULL;
    REQUIRE_STATUS(r1_client_subscribe(c, sid, R1_SINCE_NOW, &s), R1_STATUS_OK);
    char *ev = (char *)"sentinel";
    double t0 = now_s();
    CHECK_STATUS(r1_subscription_next(s, 100, &ev), R1_STATUS_TIMEOUT);
    CHECK(now_s() - t0 >= 0.09);
    CHECK(ev == NULL);
    CHECK_STATUS(r1_subscription_next(s, 0, &ev), R1_STATUS_TIMEOUT);
    r1_subscription_free(s);
    free(sid);
}

typedef struct {
    R1Subscription *s;
    R1Status st;
    double waited;
} waiter;

static void *block_in_next(void *arg) {
    waiter *w = arg;
    double t0 = now_s();
    char *ev = NULL;
    w->st = r1_subscription_next(w->s, -1, &ev); /* no timeout: only close wakes it */
    w->waited = now_s() - t0;
    r1_string_free(ev);
    return NULL;
}

static void test_subscription_close_wakes_next(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = start_session(c);
    REQUIRE(sid);
    waiter w = {NULL, R1_STATUS_OK, 0};
    REQUIRE_STATUS(r1_client_subscribe(c, sid, R1_SINCE_NOW, &w.s), R1_STATUS_OK);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, block_in_next, &w) == 0);
    sleep_ms(200);
    r1_subscription_close(w.s);
    pthread_join(t, NULL);
    CHECK(w.st == R1_STATUS_CLOSED);
    CHECK(w.waited >= 0.15);
    char *ev = NULL;
    CHECK_STATUS(r1_subscription_next(w.s, 10, &ev), R1_STATUS_CLOSED); /* stays closed */
    r1_subscription_close(w.s); /* idempotent */
    r1_subscription_free(w.s);
    free(sid);
}

static void test_subscribe_unknown_session(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    R1Subscription *s = (R1Subscription *)&c;
    CHECK_STATUS(r1_client_subscribe(c, "sess_00000000-0000-4000-8000-000000000000", 0, &s), R1_STATUS_RPC);
    CHECK(s == NULL);
    CHECK(last_rpc_code() == -32001);
}

static void test_bus_subscription(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    R1Subscription *s = NULL;
    REQUIRE_STATUS(r1_client_subscribe(c, NULL, 0, &s), R1_STATUS_OK);
    json_t *ev = read_until(s, "daemon.started", NULL, 0);
    CHECK(ev != NULL);
    json_decref(ev);
    /* A session started now shows up live on the bus. */
    char *sid = start_session(c);
    ev = read_until(s, "session.created", NULL, 0);
    CHECK(ev != NULL);
    json_decref(ev);
    r1_subscription_free(s);
    free(sid);
}

static void test_subscription_outlives_client(void) {
    const char *home = g_home;
    REQUIRE(fixture());
    R1Client *c = NULL;
    REQUIRE_STATUS(r1_client_dial(dial_opts_for(home, 0), &c), R1_STATUS_OK);
    char *sid = start_session(c);
    REQUIRE(sid);
    R1Subscription *s = NULL;
    REQUIRE_STATUS(r1_client_subscribe(c, sid, 0, &s), R1_STATUS_OK);
    r1_client_free(c);
    json_t *ev = read_until(s, "session.created", NULL, 0);
    CHECK(ev != NULL);
    json_decref(ev);
    r1_subscription_free(s);
    free(sid);
}

/* ---- journal ------------------------------------------------------------------ */

/* A session with a few records (created, input, start, delta, end); returns its id. */
static char *session_with_records(R1Client *c) {
    char *sid = start_session(c);
    if (!sid) return NULL;
    R1Subscription *s = NULL;
    if (r1_client_subscribe(c, sid, 0, &s) != R1_STATUS_OK) return sid;
    send_text(c, sid, "echo journal-line");
    json_t *end = read_until(s, "tool.end", NULL, 0);
    json_decref(end);
    r1_subscription_free(s);
    return sid;
}

static void test_journal_read_to_end(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = session_with_records(c);
    REQUIRE(sid);
    char *path = journal_path(g_home, sid);
    R1Journal *j = NULL;
    REQUIRE_STATUS(r1_journal_open(path, &j), R1_STATUS_OK);
    json_int_t want = 1;
    char *rec = NULL;
    R1Status st;
    while ((st = r1_journal_next(j, &rec)) == R1_STATUS_OK) {
        json_t *v = parse(rec);
        r1_string_free(rec);
        CHECK(v && jint(v, "seq") == want);
        CHECK(v && jint(v, "v") == 1);
        if (want == 1) CHECK(v && strcmp(jstr(v, "kind"), "session.created") == 0);
        json_decref(v);
        want++;
    }
    CHECK(st == R1_STATUS_CLOSED);
    CHECK(rec == NULL);
    CHECK(want >= 5);
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_CLOSED); /* still at the end */
    r1_journal_free(j);
    free(path);
    free(sid);
}

static void test_journal_seek(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = session_with_records(c);
    REQUIRE(sid);
    char *path = journal_path(g_home, sid);
    R1Journal *j = NULL;
    REQUIRE_STATUS(r1_journal_open(path, &j), R1_STATUS_OK);
    CHECK_STATUS(r1_journal_seek(j, 2), R1_STATUS_OK);
    char *rec = NULL;
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_OK);
    json_t *v = parse(rec);
    r1_string_free(rec);
    CHECK(v && jint(v, "seq") == 3);
    json_decref(v);
    CHECK_STATUS(r1_journal_seek(j, 1000000), R1_STATUS_OK); /* past the end */
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_CLOSED);
    CHECK_STATUS(r1_journal_seek(j, 0), R1_STATUS_OK);
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_OK);
    v = parse(rec);
    r1_string_free(rec);
    CHECK(v && jint(v, "seq") == 1);
    json_decref(v);
    r1_journal_free(j);
    free(path);
    free(sid);
}

static void test_journal_next_wait_follows(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = session_with_records(c);
    REQUIRE(sid);
    char *path = journal_path(g_home, sid);
    R1Journal *j = NULL;
    REQUIRE_STATUS(r1_journal_open(path, &j), R1_STATUS_OK);
    CHECK_STATUS(r1_journal_seek(j, 1000000), R1_STATUS_OK);
    char *rec = (char *)"sentinel";
    CHECK_STATUS(r1_journal_next_wait(j, 30, &rec), R1_STATUS_TIMEOUT);
    CHECK(rec == NULL);
    CHECK_STATUS(send_text(c, sid, "true"), R1_STATUS_OK);
    CHECK_STATUS(r1_journal_next_wait(j, 10000, &rec), R1_STATUS_OK);
    json_t *v = parse(rec);
    r1_string_free(rec);
    CHECK(v && strcmp(jstr(v, "kind"), "user.input") == 0);
    json_decref(v);
    r1_journal_free(j);
    free(path);
    free(sid);
}

static int copy_file(const char *from, const char *to) {
    int in = open(from, O_RDONLY);
    if (in < 0) return -1;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0) {
        close(in);
        return -1;
    }
    char buf[65536];
    ssize_t n;
    int rc = 0;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) rc = -1;
    close(in);
    close(out);
    return rc;
}

static void test_journal_verify(void) {
    R1Client *c = fixture();
    REQUIRE(c);
    char *sid = session_with_records(c);
    REQUIRE(sid);
    char *path = journal_path(g_home, sid);
    R1Journal *j = NULL;
    REQUIRE_STATUS(r1_journal_open(path, &j), R1_STATUS_OK);
    char *report = NULL;
    CHECK_STATUS(r1_journal_verify(j, &report), R1_STATUS_OK);
    json_t *r = parse(report);
    r1_string_free(report);
    CHECK(r && jint(r, "records") >= 5);
    CHECK(r && json_is_null(json_object_get(r, "damage")));
    json_decref(r);
    r1_journal_free(j);

    /* A copy with one flipped byte in line 2's body: verify reports damage there. */
    const char *dir = tmpdir("corrupt");
    char copy[512];
    snprintf(copy, sizeof copy, "%s/journal.ndjson", dir);
    REQUIRE(copy_file(path, copy) == 0);
    FILE *f = fopen(copy, "r+");
    REQUIRE(f);
    int ch, line = 1;
    long off = 0;
    while ((ch = fgetc(f)) != EOF) {
        off++;
        if (ch == '\n' && ++line == 2) break;
    }
    /* 60 bytes into line 2 is past the fixed prefix, inside the CRC-covered body. */
    REQUIRE(fseek(f, off + 60, SEEK_SET) == 0);
    ch = fgetc(f);
    REQUIRE(fseek(f, off + 60, SEEK_SET) == 0);
    fputc(ch == 'x' ? 'y' : 'x', f);
    fclose(f);

    REQUIRE_STATUS(r1_journal_open(copy, &j), R1_STATUS_OK);
    report = NULL;
    CHECK_STATUS(r1_journal_verify(j, &report), R1_STATUS_JOURNAL_DAMAGED);
    CHECK(strstr(r1_last_error_message(), "line 2") != NULL);
    r = parse(report);
    r1_string_free(report);
    json_t *damage = r ? json_object_get(r, "damage") : NULL;
    CHECK(json_is_object(damage));
    CHECK(jint(damage, "line") == 2);
    CHECK(strstr(jstr(damage, "reason"), "crc") != NULL);
    CHECK(r && jint(r, "records") == 1);
    json_decref(r);
    /* Iterating stops at the bad line, and stays there. */
    char *rec = NULL;
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_OK);
    r1_string_free(rec);
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_JOURNAL_DAMAGED);
    CHECK(rec == NULL);
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_JOURNAL_DAMAGED);
    r1_journal_free(j);
    free(path);
    free(sid);
}

static void test_journal_open_errors(void) {
    R1Journal *j = (R1Journal *)&j;
    CHECK_STATUS(r1_journal_open("/tmp/r1c-no-such-dir/journal.ndjson", &j), R1_STATUS_NOT_FOUND);
    CHECK(j == NULL);
    const char *dir = tmpdir("jmode");
    char p[512];
    snprintf(p, sizeof p, "%s/journal.ndjson", dir);
    int fd = open(p, O_WRONLY | O_CREAT, 0644);
    REQUIRE(fd >= 0);
    close(fd);
    REQUIRE(chmod(p, 0644) == 0);
    CHECK_STATUS(r1_journal_open(p, &j), R1_STATUS_UNSAFE);
    REQUIRE(chmod(p, 0600) == 0);
    CHECK_STATUS(r1_journal_open(p, &j), R1_STATUS_OK);
    char *rec = NULL;
    CHECK_STATUS(r1_journal_next(j, &rec), R1_STATUS_CLOSED); /* empty file: at the end */
    char *report = NULL;
    CHECK_STATUS(r1_journal_verify(j, &report), R1_STATUS_OK);
    r1_string_free(report);
    r1_journal_free(j);
}

/* ---- parity: every method of rpc.discover is reachable through r1_client_call --- */

static void test_parity_every_method(void) {
    /* Its own daemon: the walk ends with daemon.shutdown. */
    const char *home = tmpdir("parity");
    char cfg[512];
    snprintf(cfg, sizeof cfg, "{\"home\":\"%s\",\"tcp\":false,\"shutdown_grace_ms\":500}", home);
    R1Daemon *d = NULL;
    REQUIRE_STATUS(r1_daemon_start(cfg, &d), R1_STATUS_OK);
    R1Client *c = NULL;
    CHECK_STATUS(r1_client_dial(dial_opts_for(home, 0), &c), R1_STATUS_OK);
    json_t *doc = c ? call_json(c, "rpc.discover", NULL) : NULL;
    json_t *methods = doc ? json_object_get(doc, "methods") : NULL;
    CHECK(json_array_size(methods) >= 18);
    int called = 0, shutdown_seen = 0;
    for (size_t i = 0; i < json_array_size(methods); i++) {
        const char *name = jstr(json_array_get(methods, i), "name");
        if (strcmp(name, "daemon.shutdown") == 0) {
            shutdown_seen = 1;
            continue;
        }
        char *out = NULL;
        R1Status st = r1_client_call(c, name, "{}", 10000, &out);
        r1_string_free(out);
        if (st == R1_STATUS_RPC && last_rpc_code() == -32601) {
            fprintf(stderr, "    %s answered -32601 (method not found)\n", name);
            h_failed_checks++;
        } else if (st != R1_STATUS_OK && st != R1_STATUS_RPC) {
            fprintf(stderr, "    %s: status %d: %s\n", name, (int)st, r1_last_error_message());
            h_failed_checks++;
        }
        called++;
    }
    CHECK(shutdown_seen);
    char *out = NULL;
    CHECK_STATUS(r1_client_call(c, "daemon.shutdown", "{\"grace_s\":0.5}", 0, &out), R1_STATUS_OK);
    r1_string_free(out);
    fprintf(stderr, "    called %d methods plus daemon.shutdown\n", called);
    json_decref(doc);
    r1_client_free(c);
    CHECK_STATUS(r1_daemon_stop(d), R1_STATUS_OK); /* already stopping: waits, frees */
}

/* ---- auto-spawn --------------------------------------------------------------- */

static void test_auto_spawn_with_r1_bin(void) {
    const char *bin = getenv("R1_BIN");
    if (!bin || !*bin) {
        fprintf(stderr, "    R1_BIN is not set (scripts/test-c.sh sets it to target/debug/r1)\n");
        h_failed_checks++;
        return;
    }
    const char *home = tmpdir("spawn");
    R1Client *c = NULL;
    REQUIRE_STATUS(r1_client_dial(dial_opts_for(home, 1), &c), R1_STATUS_OK);
    json_t *info = call_json(c, "daemon.info", NULL);
    CHECK(info && jint(info, "pid") != (json_int_t)getpid());
    json_decref(info);
    char *out = NULL;
    CHECK_STATUS(r1_discover(home, &out), R1_STATUS_OK);
    r1_string_free(out);
    CHECK_STATUS(r1_client_call(c, "daemon.shutdown", "{\"grace_s\":1}", 0, &out), R1_STATUS_OK);
    r1_string_free(out);
    r1_client_free(c);
    /* Wait for the spawned daemon to remove its discovery file. */
    double deadline = now_s() + 15;
    R1Status st = R1_STATUS_OK;
    while (now_s() < deadline) {
        out = NULL;
        st = r1_discover(home, &out);
        r1_string_free(out);
        if (st != R1_STATUS_OK) break;
        sleep_ms(50);
    }
    CHECK(st == R1_STATUS_NOT_FOUND);
}

static const test_case TESTS[] = {
    {"version_and_macros", test_version_and_macros},
    {"free_functions_accept_null", test_free_functions_accept_null},
    {"null_arguments", test_null_arguments},
    {"last_error_is_per_thread", test_last_error_is_per_thread},
    {"discover_missing", test_discover_missing},
    {"discover_stale", test_discover_stale},
    {"discover_unsafe_mode", test_discover_unsafe_mode},
    {"discover_live_daemon", test_discover_live_daemon},
    {"dial_no_daemon_without_spawn", test_dial_no_daemon_without_spawn},
    {"dial_stale_without_spawn", test_dial_stale_without_spawn},
    {"dial_bad_options", test_dial_bad_options},
    {"daemon_start_bad_config", test_daemon_start_bad_config},
    {"daemon_start_and_stop", test_daemon_start_and_stop},
    {"call_bad_params_json", test_call_bad_params_json},
    {"call_rpc_error_unknown_session", test_call_rpc_error_unknown_session},
    {"call_unknown_method", test_call_unknown_method},
    {"client_shared_between_threads", test_client_shared_between_threads},
    {"session_round_trip", test_session_round_trip},
    {"subscription_reply", test_subscription_reply},
    {"subscription_next_timeout", test_subscription_next_timeout},
    {"subscription_close_wakes_next", test_subscription_close_wakes_next},
    {"subscribe_unknown_session", test_subscribe_unknown_session},
    {"bus_subscription", test_bus_subscription},
    {"subscription_outlives_client", test_subscription_outlives_client},
    {"journal_read_to_end", test_journal_read_to_end},
    {"journal_seek", test_journal_seek},
    {"journal_next_wait_follows", test_journal_next_wait_follows},
    {"journal_verify", test_journal_verify},
    {"journal_open_errors", test_journal_open_errors},
    {"parity_every_method", test_parity_every_method},
    {"auto_spawn_with_r1_bin", test_auto_spawn_with_r1_bin},
};

H_MAIN_TEARDOWN("r1_c_tests", TESTS, teardown)
