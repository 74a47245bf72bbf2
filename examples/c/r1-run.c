/*
 * r1-run: the smallest useful libr1 program.
 *
 *   r1-run DIR [COMMAND]
 *
 * Discovers the daemon (starting one if none runs), starts a shell session in DIR,
 * sends COMMAND (default: "echo hello from C; uname -s"), prints the session's
 * records as they stream in, and exits when the command's tool.end arrives (exit
 * status 0 if the command succeeded). The session stays in the daemon afterwards.
 *
 * JSON is built with jansson so paths and commands are escaped properly.
 */
#define _XOPEN_SOURCE 700
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "r1.h"

static int fail(const char *what, R1Status st) {
    fprintf(stderr, "r1-run: %s failed (status %d): %s\n", what, (int)st, r1_last_error_message());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: r1-run DIR [COMMAND]\n");
        return 2;
    }
    char workdir[PATH_MAX];
    if (!realpath(argv[1], workdir)) {
        perror(argv[1]);
        return 2;
    }
    const char *command = argc > 2 ? argv[2] : "echo hello from C; uname -s";

    /* Where is the daemon? (Never starts one; dial below does if needed.) */
    char *disc = NULL;
    R1Status st = r1_discover(NULL, &disc);
    if (st == R1_STATUS_OK) {
        json_t *d = json_loads(disc, 0, NULL);
        printf("daemon pid %lld on %s\n", (long long)json_integer_value(json_object_get(d, "pid")),
               json_string_value(json_object_get(d, "sock_path")));
        json_decref(d);
        r1_string_free(disc);
    } else {
        printf("no daemon yet (%s); dialing starts one\n", r1_last_error_message());
    }

    R1Client *client = NULL;
    st = r1_client_dial("{\"spawn\":true,\"timeout_ms\":10000}", &client);
    if (st != R1_STATUS_OK) return fail("dial", st);

    /* session.start {workdir} through the one generic call. */
    json_t *params = json_pack("{s:s, s:s}", "workdir", workdir, "name", "r1-run");
    char *params_s = json_dumps(params, JSON_COMPACT);
    json_decref(params);
    char *result = NULL;
    st = r1_client_call(client, "session.start", params_s, 0, &result);
    free(params_s);
    if (st != R1_STATUS_OK) {
        r1_client_free(client);
        return fail("session.start", st);
    }
    json_t *started = json_loads(result, 0, NULL);
    r1_string_free(result);
    char *session_id = strdup(json_string_value(json_object_get(started, "session_id")));
    json_decref(started);
    printf("session %s in %s\n", session_id, workdir);

    /* Subscribe from the start (since_seq 0) before sending, so nothing is missed. */
    R1Subscription *sub = NULL;
    st = r1_client_subscribe(client, session_id, 0, &sub);
    if (st != R1_STATUS_OK) {
        free(session_id);
        r1_client_free(client);
        return fail("subscribe", st);
    }

    params = json_pack("{s:s, s:s}", "session_id", session_id, "text", command);
    params_s = json_dumps(params, JSON_COMPACT);
    json_decref(params);
    st = r1_client_call(client, "session.send", params_s, 0, &result);
    free(params_s);
    r1_string_free(result);
    int rc = 1;
    if (st != R1_STATUS_OK) {
        rc = fail("session.send", st);
        goto out;
    }

    for (;;) {
        char *ev = NULL;
        st = r1_subscription_next(sub, 30000, &ev);
        if (st == R1_STATUS_TIMEOUT) {
            fprintf(stderr, "r1-run: nothing for 30 s, giving up\n");
            break;
        }
        if (st != R1_STATUS_OK) {
            fail("subscription", st);
            break;
        }
        json_t *e = json_loads(ev, 0, NULL);
        r1_string_free(ev);
        const char *kind = json_string_value(json_object_get(e, "kind"));
        json_t *data = json_object_get(e, "data");
        long long seq = (long long)json_integer_value(json_object_get(e, "seq"));
        if (kind && strcmp(kind, "session.delta") == 0) {
            printf("[%lld] %s: %s", seq, json_string_value(json_object_get(data, "stream")),
                   json_string_value(json_object_get(data, "text")));
        } else {
            char *d = json_dumps(data, JSON_COMPACT);
            printf("[%lld] %s %s\n", seq, kind ? kind : "?", d ? d : "");
            free(d);
        }
        int done = kind && strcmp(kind, "tool.end") == 0;
        if (done) rc = json_is_true(json_object_get(data, "ok")) ? 0 : 1;
        json_decref(e);
        if (done) break;
    }
out:
    r1_subscription_free(sub);
    r1_client_free(client);
    free(session_id);
    return rc;
}
