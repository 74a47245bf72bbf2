/*
 * r1-native-host: a browser native-messaging host for r1 (DESIGN §12).
 *
 * The browser starts it and speaks frames on stdin/stdout (frame.h). Each frame is a
 * JSON-RPC request that the host forwards to the r1 daemon over the unix socket with
 * libr1 (dialing, and starting the daemon if needed, on first use), so the extension
 * never holds a token. Answers go back as frames of at most 1 MB: journal.read
 * results are paged and oversize events are replaced (pager.h). Subscriptions are
 * pumped by one thread each; all frame writes go through one mutex (nm_writer).
 * Logs go to stderr (the browser's log) or to $R1_NMH_LOG; stdout carries frames only.
 * The message shapes are documented in ../README.md.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "r1.h"
#include "frame.h"
#include "pager.h"

/* The daemon refuses messages over 16 MiB (DESIGN §4); the host answers those
 * itself instead of forwarding them. */
#define MAX_FORWARD ((uint32_t)16 * 1024 * 1024)

/* JSON-RPC codes used by the host itself. -32000 is the "server error" range that
 * JSON-RPC leaves to implementations: the daemon could not be reached or failed in
 * a way that is not a JSON-RPC error (data.kind says how). */
#define E_PARSE (-32700)
#define E_INVALID_REQUEST (-32600)
#define E_INVALID_PARAMS (-32602)
#define E_HOST (-32000)
#define E_NOT_FOUND (-32001)
#define E_INVALID_STATE (-32003)
#define E_UNAUTHORIZED (-32004)
#define E_TOO_LARGE (-32005)

typedef struct sub_entry {
    long long id;      /* the host's id, shown to the extension as "sub" */
    R1Subscription *s;
    pthread_t thread;
    atomic_int closing; /* the host is closing it: no $/closed notice */
    atomic_int done;    /* the pump thread has returned */
    struct sub_entry *next;
} sub_entry;

static struct {
    nm_writer out;
    FILE *log;
    R1Client *client;
    pthread_mutex_t subs_lock;
    sub_entry *subs;
    long long next_sub;
} host;

static void logf_(const char *fmt, ...) {
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    fprintf(host.log, "%s r1-native-host[%ld]: ", stamp, (long)getpid());
    vfprintf(host.log, fmt, ap);
    fputc('\n', host.log);
    fflush(host.log);
    va_end(ap);
}

static int emit(void *ctx, const char *body, size_t len) {
    (void)ctx;
    return nm_write_frame(&host.out, body, len) != 0;
}

/* Writes a frame body (taking ownership) unless the request was a notification. */
static void send_body(char *body, int silent) {
    if (body && !silent && nm_write_frame(&host.out, body, strlen(body)) != 0)
        logf_("could not write a frame of %zu bytes", strlen(body));
    free(body);
}

static void send_error(json_t *id, int silent, long long code, const char *kind, const char *msg) {
    logf_("answering error %lld (%s): %s", code, kind, msg);
    send_body(nm_error_body(id, code, kind, msg), silent);
}

static const char *status_kind(R1Status st) {
    switch (st) {
    case R1_STATUS_OK: return "ok";
    case R1_STATUS_NULL_ARGUMENT: return "null_argument";
    case R1_STATUS_INVALID_ARGUMENT: return "invalid_params";
    case R1_STATUS_NOT_FOUND: return "daemon_not_found";
    case R1_STATUS_UNSAFE: return "unsafe";
    case R1_STATUS_IO: return "io";
    case R1_STATUS_PROTOCOL: return "protocol";
    case R1_STATUS_RPC: return "rpc";
    case R1_STATUS_TIMEOUT: return "timeout";
    case R1_STATUS_CLOSED: return "closed";
    case R1_STATUS_AUTH: return "unauthorized";
    case R1_STATUS_JOURNAL_DAMAGED: return "journal_damaged";
    case R1_STATUS_PANIC: return "internal";
    }
    return "internal";
}

/* Answers a failed libr1 call: the daemon's own error object for R1_STATUS_RPC,
 * else a host error whose data.kind names the status. Reads this thread's last error. */
static void send_status_error(json_t *id, int silent, R1Status st) {
    const char *msg = r1_last_error_message();
    if (st == R1_STATUS_RPC) {
        json_error_t jerr;
        json_t *obj = json_loads(msg, 0, &jerr);
        if (json_is_object(obj)) {
            send_body(nm_error_obj_body(id, obj), silent);
            json_decref(obj);
            return;
        }
        json_decref(obj);
    }
    long long code = st == R1_STATUS_INVALID_ARGUMENT ? E_INVALID_PARAMS : E_HOST;
    send_error(id, silent, code, status_kind(st), msg);
}

/* Dials the daemon on first use (starting it if needed). Returns 0 or a status.
 * $R1_NMH_DIAL, if set, replaces the dial options (r1_client_dial's JSON). */
static R1Status ensure_client(void) {
    if (host.client) return R1_STATUS_OK;
    /* 10 s rather than the 2 s default: the first message of a browser session may
     * have to start the daemon, on a machine busy starting the browser. */
    const char *opts = getenv("R1_NMH_DIAL");
    if (!opts || !*opts) opts = "{\"client_name\":\"r1-native-host\",\"timeout_ms\":10000}";
    R1Status st = r1_client_dial(opts, &host.client);
    if (st != R1_STATUS_OK) logf_("cannot reach the daemon: %s", r1_last_error_message());
    return st;
}

/* r1_client_call with the params object/array given (NULL: none); on success returns
 * the parsed result, else answers the error and returns NULL. */
static json_t *call(json_t *id, int silent, const char *method, json_t *params) {
    R1Status st = ensure_client();
    if (st != R1_STATUS_OK) {
        send_status_error(id, silent, st);
        return NULL;
    }
    char *params_s = params ? json_dumps(params, JSON_COMPACT) : NULL;
    char *result_s = NULL;
    st = r1_client_call(host.client, method, params_s, 0, &result_s);
    free(params_s);
    if (st != R1_STATUS_OK) {
        send_status_error(id, silent, st);
        return NULL;
    }
    json_error_t jerr;
    json_t *result = json_loads(result_s, JSON_DECODE_ANY, &jerr);
    r1_string_free(result_s);
    if (!result) send_error(id, silent, E_HOST, "protocol", "the daemon's result is not JSON");
    return result;
}

/* ---- subscriptions ------------------------------------------------------------ */

static void *pump(void *arg) {
    sub_entry *e = arg;
    for (;;) {
        char *item = NULL;
        R1Status st = r1_subscription_next(e->s, -1, &item);
        if (st == R1_STATUS_OK) {
            char *body = nm_event_body(item, e->id, NM_MAX_OUT);
            r1_string_free(item);
            if (body && nm_write_frame(&host.out, body, strlen(body)) != 0 && atomic_load(&host.out.broken)) {
                free(body);
                break;
            }
            free(body);
            continue;
        }
        if (st == R1_STATUS_TIMEOUT) continue;
        if (!atomic_load(&e->closing)) {
            /* The stream ended by itself (session ended, deleted, daemon gone for good). */
            json_t *note = json_pack("{s:s, s:s, s:{s:I, s:s, s:s}}", "jsonrpc", "2.0", "method",
                                     "$/closed", "params", "sub", (json_int_t)e->id, "reason",
                                     st == R1_STATUS_CLOSED ? "ended" : status_kind(st), "message",
                                     r1_last_error_message());
            char *body = json_dumps(note, JSON_COMPACT);
            json_decref(note);
            send_body(body, 0);
        }
        break;
    }
    atomic_store(&e->done, 1);
    return NULL;
}

static void close_entry(sub_entry *e) {
    atomic_store(&e->closing, 1);
    r1_subscription_close(e->s);
    pthread_join(e->thread, NULL);
    r1_subscription_free(e->s);
    free(e);
}

/* Frees subscriptions whose stream has ended (their threads have returned). */
static void reap_done(void) {
    pthread_mutex_lock(&host.subs_lock);
    sub_entry **pp = &host.subs;
    while (*pp) {
        sub_entry *e = *pp;
        if (atomic_load(&e->done)) {
            *pp = e->next;
            close_entry(e);
        } else {
            pp = &e->next;
        }
    }
    pthread_mutex_unlock(&host.subs_lock);
}

static void do_subscribe(json_t *id, int silent, const char *method, json_t *params) {
    reap_done();
    const char *session_id = NULL;
    if (strcmp(method, "session.subscribe") == 0) {
        session_id = json_string_value(json_object_get(params, "session_id"));
        if (!session_id) {
            send_error(id, silent, E_INVALID_PARAMS, "invalid_params",
                       "session.subscribe needs params.session_id (a string)");
            return;
        }
    }
    uint64_t since = R1_SINCE_NOW;
    json_t *since_v = json_object_get(params, "since_seq");
    if (since_v && !json_is_null(since_v)) {
        if (!json_is_integer(since_v) || json_integer_value(since_v) < 0) {
            send_error(id, silent, E_INVALID_PARAMS, "invalid_params",
                       "since_seq must be a non-negative integer");
            return;
        }
        since = (uint64_t)json_integer_value(since_v);
    }
    R1Status st = ensure_client();
    if (st != R1_STATUS_OK) {
        send_status_error(id, silent, st);
        return;
    }
    R1Subscription *s = NULL;
    st = r1_client_subscribe(host.client, session_id, since, &s);
    if (st != R1_STATUS_OK) {
        send_status_error(id, silent, st);
        return;
    }
    sub_entry *e = calloc(1, sizeof *e);
    if (!e) {
        r1_subscription_free(s);
        send_error(id, silent, E_HOST, "internal", "out of memory");
        return;
    }
    e->s = s;
    e->id = ++host.next_sub;

    /* The answer (with the host's sub id) goes out before the first $/event. */
    char *reply_s = NULL;
    json_t *reply = NULL;
    if (r1_subscription_reply(s, &reply_s) == R1_STATUS_OK) {
        json_error_t jerr;
        reply = json_loads(reply_s, 0, &jerr);
        r1_string_free(reply_s);
    }
    if (!json_is_object(reply)) {
        json_decref(reply);
        reply = json_object();
    }
    json_object_set_new(reply, "sub", json_integer((json_int_t)e->id));
    send_body(nm_result_body(id, reply, NM_MAX_OUT), silent);
    json_decref(reply);

    if (pthread_create(&e->thread, NULL, pump, e) != 0) {
        logf_("cannot start a thread for subscription %lld", e->id);
        r1_subscription_free(s);
        free(e);
        return;
    }
    pthread_mutex_lock(&host.subs_lock);
    e->next = host.subs;
    host.subs = e;
    pthread_mutex_unlock(&host.subs_lock);
    logf_("subscription %lld started (%s)", e->id, session_id ? session_id : "bus");
}

static void do_unsubscribe(json_t *id, int silent, json_t *params) {
    json_t *sub_v = json_object_get(params, "sub");
    if (!json_is_integer(sub_v)) {
        send_error(id, silent, E_INVALID_PARAMS, "invalid_params", "params.sub must be an integer");
        return;
    }
    long long want = json_integer_value(sub_v);
    pthread_mutex_lock(&host.subs_lock);
    sub_entry **pp = &host.subs, *found = NULL;
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == want) {
            found = *pp;
            *pp = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&host.subs_lock);
    if (!found) {
        send_error(id, silent, E_NOT_FOUND, "not_found", "no such subscription");
        return;
    }
    close_entry(found);
    json_t *empty = json_object();
    send_body(nm_result_body(id, empty, NM_MAX_OUT), silent);
    json_decref(empty);
}

/* ---- r1.discover -------------------------------------------------------------- */

/* Port and a scoped token for an extension that wants WebSocket/HTTP itself. The
 * master token is never handed out: only daemon.mint_token's scoped ones. */
static void do_discover(json_t *id, int silent, json_t *params) {
    const char *scope = "read";
    json_t *scope_v = json_object_get(params, "scope");
    if (scope_v) {
        scope = json_string_value(scope_v);
        if (!scope || !(strcmp(scope, "read") == 0 ||
                        (strncmp(scope, "session:", 8) == 0 && scope[8] != '\0'))) {
            send_error(id, silent, E_INVALID_PARAMS, "invalid_params",
                       "scope must be \"read\" or \"session:<id>\"");
            return;
        }
    }
    json_t *info = call(id, silent, "daemon.info", NULL);
    if (!info) return;
    json_t *port = json_object_get(info, "port");
    if (!json_is_integer(port)) {
        json_decref(info);
        send_error(id, silent, E_INVALID_STATE, "invalid_state",
                   "the daemon has no loopback listener (started with --no-tcp)");
        return;
    }
    json_t *mint_params = json_pack("{s:s}", "scope", scope);
    json_t *ttl = json_object_get(params, "ttl_s");
    if (ttl) json_object_set(mint_params, "ttl_s", ttl);
    json_t *minted = call(id, silent, "daemon.mint_token", mint_params);
    json_decref(mint_params);
    if (!minted) {
        json_decref(info);
        return;
    }
    json_t *result = json_pack("{s:s, s:O, s:O, s:O, s:s, s:i}", "host", "127.0.0.1", "port", port,
                               "token", json_object_get(minted, "token"), "expires_at",
                               json_object_get(minted, "expires_at"), "scope", scope,
                               "protocol_version", 1);
    if (result) {
        send_body(nm_result_body(id, result, NM_MAX_OUT), silent);
    } else {
        send_error(id, silent, E_HOST, "protocol", "daemon.mint_token answered without a token");
    }
    json_decref(result);
    json_decref(minted);
    json_decref(info);
}

/* ---- one frame ---------------------------------------------------------------- */

static void handle_frame(const char *body, uint32_t len) {
    if (len > MAX_FORWARD) {
        send_error(NULL, 0, E_TOO_LARGE, "too_large",
                   "the message is over the daemon's 16 MiB limit");
        return;
    }
    json_error_t jerr;
    json_t *msg = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
    if (!msg) {
        char text[300];
        snprintf(text, sizeof text, "parse error: %s (byte %d)", jerr.text, jerr.position);
        send_error(NULL, 0, E_PARSE, "parse", text);
        return;
    }
    if (!json_is_object(msg)) {
        send_error(NULL, 0, E_INVALID_REQUEST, "invalid_request",
                   "a native message must be one JSON-RPC request object (batches are not supported)");
        json_decref(msg);
        return;
    }
    json_t *id = json_object_get(msg, "id");
    int silent = id == NULL; /* a notification: act, never answer */
    if (id && !(json_is_string(id) || json_is_integer(id) || json_is_real(id) || json_is_null(id))) {
        send_error(NULL, 0, E_INVALID_REQUEST, "invalid_request", "id must be a string, a number or null");
        json_decref(msg);
        return;
    }
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *params = json_object_get(msg, "params");
    if (!method || (params && !json_is_object(params) && !json_is_array(params))) {
        send_error(id, 0, E_INVALID_REQUEST, "invalid_request",
                   "a request needs a string method and, if any, object or array params");
        json_decref(msg);
        return;
    }
    if (strcmp(method, "r1.discover") == 0) {
        do_discover(id, silent, params);
    } else if (strcmp(method, "session.subscribe") == 0 || strcmp(method, "daemon.subscribe") == 0) {
        do_subscribe(id, silent, method, params);
    } else if (strcmp(method, "session.unsubscribe") == 0) {
        do_unsubscribe(id, silent, params);
    } else if (strcmp(method, "daemon.rotate_token") == 0 || strcmp(method, "daemon.mint_token") == 0) {
        /* The extension never holds the master token nor mints its own: r1.discover
         * gives it a scoped one. Rotating would log out every other HTTP client. */
        send_error(id, silent, E_UNAUTHORIZED, "unauthorized",
                   "not available through the native host; use r1.discover for a scoped token");
    } else {
        json_t *result = call(id, silent, method, params);
        if (result && !silent) {
            if (strcmp(method, "journal.read") == 0)
                nm_send_journal_pages(id, result, NM_MAX_OUT, emit, NULL);
            else
                send_body(nm_result_body(id, result, NM_MAX_OUT), 0);
        }
        json_decref(result);
    }
    json_decref(msg);
}

int main(int argc, char **argv) {
    host.log = stderr;
    const char *log_path = getenv("R1_NMH_LOG");
    if (log_path && *log_path) {
        FILE *f = fopen(log_path, "a");
        if (f) host.log = f;
    }
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        fprintf(stderr, "r1-native-host (libr1 %s)\n", r1_version());
        return 0;
    }
    /* Frames get a private descriptor and fd 1 becomes stderr, so nothing but frames
     * can ever reach the browser, whatever a library prints. CLOEXEC: a daemon we
     * spawn must not hold the browser's pipe. */
    int frames_fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
    if (frames_fd < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        perror("r1-native-host: cannot set up stdout");
        return 1;
    }
    /* A closed browser pipe must be an EPIPE error, not a fatal signal. */
    signal(SIGPIPE, SIG_IGN);
    nm_writer_init(&host.out, frames_fd);
    pthread_mutex_init(&host.subs_lock, NULL);
    logf_("started by %s (libr1 %s)", argc > 1 ? argv[1] : "(no origin argument)", r1_version());

    int rc = 0;
    while (!atomic_load(&host.out.broken)) {
        char *body = NULL;
        uint32_t len = 0;
        nm_read_status rs = nm_read_frame(STDIN_FILENO, NM_MAX_IN, &body, &len);
        if (rs == NM_READ_OK) {
            handle_frame(body, len);
            free(body);
            continue;
        }
        if (rs == NM_READ_EOF) {
            logf_("end of input: exiting");
        } else if (rs == NM_READ_TOO_LARGE) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "a frame of %u bytes is over the host's %u-byte limit; the stream is out of step, closing",
                     len, NM_MAX_IN);
            send_error(NULL, 0, E_TOO_LARGE, "too_large", msg);
            rc = 1;
        } else if (rs == NM_READ_TRUNCATED) {
            logf_("input ended inside a frame: exiting");
            rc = 1;
        } else {
            logf_("cannot read stdin: %s", rs == NM_READ_NOMEM ? "out of memory" : strerror(errno));
            rc = 1;
        }
        break;
    }

    /* Close every subscription (waking its thread), then the client. */
    pthread_mutex_lock(&host.subs_lock);
    sub_entry *e = host.subs;
    host.subs = NULL;
    pthread_mutex_unlock(&host.subs_lock);
    while (e) {
        sub_entry *next = e->next;
        close_entry(e);
        e = next;
    }
    r1_client_free(host.client);
    pthread_mutex_destroy(&host.subs_lock);
    nm_writer_destroy(&host.out);
    close(frames_fd);
    if (host.log != stderr) fclose(host.log);
    return rc;
}
