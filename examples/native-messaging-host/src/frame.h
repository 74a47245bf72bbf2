/*
 * frame.h: the browser native-messaging wire format.
 *
 * Each message, both ways, is a 32-bit length in native byte order followed by that
 * many bytes of UTF-8 JSON. Chrome refuses host->browser messages over 1 MB
 * (NM_MAX_OUT); this host refuses browser->host messages over NM_MAX_IN.
 */
#ifndef NM_FRAME_H
#define NM_FRAME_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* The largest frame the host writes: Chrome's limit for host->browser messages. */
#define NM_MAX_OUT ((size_t)1024 * 1024)

/* The largest frame the host reads. Browsers may send more (Chrome documents 4 GB,
 * later 64 MiB), but nothing an r1 extension sends comes close: a larger length
 * prefix means the stream is out of step, so the host reports it and exits. */
#define NM_MAX_IN ((uint32_t)64 * 1024 * 1024)

typedef enum {
    NM_READ_OK = 0,     /* *out holds len bytes plus a NUL (caller frees) */
    NM_READ_EOF,        /* clean end of input before a length prefix */
    NM_READ_TRUNCATED,  /* input ended inside a prefix or a body */
    NM_READ_TOO_LARGE,  /* the prefix announced more than max bytes; *len says how many */
    NM_READ_IO,         /* read(2) failed (errno is set) */
    NM_READ_NOMEM,
} nm_read_status;

/* Reads one frame from fd. On NM_READ_OK, *out is a malloc'd, NUL-terminated copy of
 * the body and *len its length. */
nm_read_status nm_read_frame(int fd, uint32_t max, char **out, uint32_t *len);

/* Serialises writes of whole frames to one fd (stdout is shared by the request loop
 * and every subscription thread; a frame must never interleave with another). */
typedef struct {
    int fd;
    pthread_mutex_t lock;
    atomic_int broken; /* set once a write failed (the browser went away) */
} nm_writer;

void nm_writer_init(nm_writer *w, int fd);
void nm_writer_destroy(nm_writer *w);

/* Writes one frame. Returns 0, or -1 when the body is over NM_MAX_OUT (nothing is
 * written) or the write failed (w->broken is then set). */
int nm_write_frame(nm_writer *w, const char *body, size_t len);

#endif
