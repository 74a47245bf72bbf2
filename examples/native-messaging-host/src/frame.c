/* frame.c: reading and writing native-messaging frames (see frame.h). */
#define _POSIX_C_SOURCE 200809L
#include "frame.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Reads exactly n bytes unless input ends first; returns bytes read or -1. */
static ssize_t read_full(int fd, void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = read(fd, (char *)buf + done, n - done);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += (size_t)r;
    }
    return (ssize_t)done;
}

nm_read_status nm_read_frame(int fd, uint32_t max, char **out, uint32_t *len) {
    *out = NULL;
    *len = 0;
    uint32_t n;
    ssize_t r = read_full(fd, &n, sizeof n);
    if (r < 0) return NM_READ_IO;
    if (r == 0) return NM_READ_EOF;
    if ((size_t)r < sizeof n) return NM_READ_TRUNCATED;
    *len = n;
    if (n > max) return NM_READ_TOO_LARGE;
    char *buf = malloc((size_t)n + 1);
    if (!buf) return NM_READ_NOMEM;
    r = read_full(fd, buf, n);
    if (r < 0) {
        free(buf);
        return NM_READ_IO;
    }
    if ((size_t)r < n) {
        free(buf);
        return NM_READ_TRUNCATED;
    }
    buf[n] = '\0';
    *out = buf;
    return NM_READ_OK;
}

void nm_writer_init(nm_writer *w, int fd) {
    w->fd = fd;
    atomic_init(&w->broken, 0);
    pthread_mutex_init(&w->lock, NULL);
}

void nm_writer_destroy(nm_writer *w) { pthread_mutex_destroy(&w->lock); }

static int write_full(int fd, const void *buf, size_t n) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = write(fd, (const char *)buf + done, n - done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        done += (size_t)r;
    }
    return 0;
}

int nm_write_frame(nm_writer *w, const char *body, size_t len) {
    if (len > NM_MAX_OUT) return -1;
    uint32_t n = (uint32_t)len;
    int rc = 0;
    pthread_mutex_lock(&w->lock);
    if (atomic_load(&w->broken)) {
        rc = -1;
    } else if (write_full(w->fd, &n, sizeof n) != 0 || write_full(w->fd, body, len) != 0) {
        atomic_store(&w->broken, 1);
        rc = -1;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}
