/* loadgen.c: the benchmark load driver: HTTP/1.1 keep-alive load, closed loop or open loop.
 *
 * closed loop  N connections, each sends its next request as soon as the previous answer is in
 *              (k6 "constant VUs", wrk); latency = completion - send.
 * open loop    a fixed request rate on a fixed schedule; a request waits for a free connection
 *              (up to --connections) and its latency is measured from its *scheduled* send time,
 *              so queueing in front of a slow server is not hidden (no coordinated omission).
 *
 * Every request body is a template whose "{ID}" markers are replaced by a unique id (and "{WORDS}"
 * by six words picked from the request number), so no cache can answer a pass-through request; --repeat-body/--repeat-pct send a fixed body for a share of
 * requests instead (the cache "mixed" mode).
 *
 * Output: one JSON summary on stdout (counts, the driver's own CPU, schedule lag) and, with
 * --out, one line per measured request: "latency_us ttfb_us status hit retry_after" (retry_after 1
 * when the answer carried a Retry-After header), where status < 0 is a
 * transport error (-1 connect, -2 read/reset, -3 timeout). The harness computes the percentiles.
 *
 * Single-threaded epoll: one core drives well over 10k requests/s, far above the gateways here.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define HDR_MAX 65536
#define READ_BUF 65536
#define E_CONNECT (-1)
#define E_READ (-2)
#define E_TIMEOUT (-3)

enum cstate { C_CLOSED, C_CONNECTING, C_IDLE, C_BUSY, C_BACKOFF };
enum chunk_state { CK_SIZE, CK_EXT, CK_DATA, CK_DATA_END, CK_TRAILER };

typedef struct {
    int64_t sched_ns;
    uint64_t seq;
    int retried;
} request_t;

typedef struct conn {
    int fd;
    int state;
    int used;            /* answered at least one request: a silent close may be a stale keep-alive */
    int has_req;
    int in_idle; /* listed in g_idle (never twice: the list has one slot per connection) */
    request_t req;
    char *wbuf;
    size_t wlen, woff;
    int64_t sent_ns, first_byte_ns, backoff_until;
    /* response parser */
    char *hbuf;
    size_t hlen;
    int headers_done, status, chunked, close_after, hit, retry_after, until_eof;
    int64_t body_left;
    int ck_state, ck_line;
    int64_t ck_size;
    size_t got_bytes;
} conn_t;

/* ---- settings ---- */
static struct sockaddr_in g_addr;
static char g_hostport[300], g_path[2048] = "/";
static char g_method[16] = "POST";
static char g_headers[16384];
static size_t g_headers_len;
static char **g_tmpl_parts;
static int *g_tmpl_kind; /* marker after part i: 0 {ID}, 1 {WORDS} */
static size_t g_tmpl_n;
static char *g_repeat_body;
static size_t g_repeat_len;
static int g_repeat_pct;
static int g_open_loop;
static double g_rate = 100, g_duration = 5, g_warmup = 1, g_timeout = 10;
static int g_nconns = 50;
static char g_nonce[64];
static FILE *g_out;

/* ---- state ---- */
static int g_ep;
static conn_t *g_conns;
static int *g_idle;
static int g_nidle;
static int g_nopen;
static int64_t g_t0, g_measure_from, g_end, g_hard_end;
static uint64_t g_seq;
static uint64_t g_sched_count;
static request_t *g_pending;
static size_t g_pend_cap, g_pend_head, g_pend_len, g_pend_max;
static int g_timer_fd;
static int64_t g_next_sched;
static int g_scheduling = 1;
static uint64_t g_in_flight;

/* ---- counters ---- */
static uint64_t n_sent, n_done, n_measured, n_ok, n_err_connect, n_err_read, n_err_timeout, n_status_err;
static uint64_t n_retries, n_conns_opened, n_hits, n_lag_over_1ms;
static int64_t g_max_lag_ns;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open body file");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read body file");
    buf[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Words for {WORDS}: six per request, picked by a hash of the request number, so unique prompts
 * also differ in meaning (a semantic cache must not match them) and runs are reproducible. */
static const char *WORDS[64] = {
    "harbor", "violet", "quantum", "ledger", "glacier", "saffron", "tunnel", "orchid", "falcon", "copper",
    "meadow", "cipher", "lantern", "thunder", "velvet", "canyon", "pepper", "marble", "rocket", "willow",
    "garnet", "bishop", "walnut", "comet", "prairie", "anchor", "basalt", "cobalt", "dynamo", "ember",
    "fjord", "gazebo", "hazel", "igloo", "jasmine", "kettle", "lagoon", "mosaic", "nectar", "oyster",
    "parsley", "quiver", "raven", "sonnet", "tundra", "umbra", "vortex", "wombat", "xenon", "yonder",
    "zephyr", "almond", "banjo", "cactus", "dune", "easel", "fossil", "gecko", "hammock", "ivory",
    "jigsaw", "koala", "lemur", "mango"};

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static size_t put_words(char *dst, uint64_t seq) {
    size_t o = 0;
    uint64_t h = mix64(seq + 0x9e3779b97f4a7c15ULL);
    for (int i = 0; i < 6; i++) {
        const char *w = WORDS[(h >> (i * 6)) & 63];
        size_t l = strlen(w);
        if (dst) memcpy(dst + o, w, l);
        o += l;
        if (i < 5) {
            if (dst) dst[o] = ' ';
            o++;
        }
    }
    return o;
}

static void split_template(char *tmpl) {
    size_t cap = 8;
    g_tmpl_parts = malloc(cap * sizeof(char *));
    g_tmpl_kind = malloc(cap * sizeof(int));
    char *p = tmpl;
    for (;;) {
        char *id = strstr(p, "{ID}");
        char *words = strstr(p, "{WORDS}");
        char *m = id && (!words || id < words) ? id : words;
        if (g_tmpl_n + 1 >= cap) {
            cap *= 2;
            g_tmpl_parts = realloc(g_tmpl_parts, cap * sizeof(char *));
            g_tmpl_kind = realloc(g_tmpl_kind, cap * sizeof(int));
        }
        if (!m) {
            g_tmpl_parts[g_tmpl_n++] = p;
            return;
        }
        int kind = m == words;
        *m = 0;
        g_tmpl_kind[g_tmpl_n] = kind;
        g_tmpl_parts[g_tmpl_n++] = p;
        p = m + (kind ? 7 : 4);
    }
}

static void parse_url(const char *url) {
    if (strncmp(url, "http://", 7) != 0) die("only http:// URLs are supported");
    const char *h = url + 7;
    const char *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl >= sizeof g_hostport) die("host too long");
    memcpy(g_hostport, h, hl);
    g_hostport[hl] = 0;
    if (slash) snprintf(g_path, sizeof g_path, "%s", slash);
    char host[300];
    int port = 80;
    char *colon = strrchr(g_hostport, ':');
    if (colon) {
        size_t n = (size_t)(colon - g_hostport);
        memcpy(host, g_hostport, n);
        host[n] = 0;
        port = atoi(colon + 1);
    } else {
        snprintf(host, sizeof host, "%s", g_hostport);
    }
    if (strcmp(host, "localhost") == 0) snprintf(host, sizeof host, "127.0.0.1");
    memset(&g_addr, 0, sizeof g_addr);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) die("host must be an IPv4 address");
}

/* ---- request building ---- */
static void build_request(conn_t *c) {
    char id[96];
    const char *body = NULL;
    size_t blen = 0;
    char *owned = NULL;
    /* Spread the repeated share evenly (50% alternates), not in blocks of 100. */
    uint64_t q = c->req.seq;
    if (g_repeat_body && ((q + 1) * (uint64_t)g_repeat_pct) / 100 > (q * (uint64_t)g_repeat_pct) / 100) {
        body = g_repeat_body;
        blen = g_repeat_len;
    } else {
        int idl = snprintf(id, sizeof id, "%s-%llu", g_nonce, (unsigned long long)c->req.seq);
        size_t wl = put_words(NULL, c->req.seq);
        size_t total = 0;
        for (size_t i = 0; i < g_tmpl_n; i++)
            total += strlen(g_tmpl_parts[i]) + (i + 1 < g_tmpl_n ? (g_tmpl_kind[i] ? wl : (size_t)idl) : 0);
        owned = malloc(total + 1);
        size_t o = 0;
        for (size_t i = 0; i < g_tmpl_n; i++) {
            size_t l = strlen(g_tmpl_parts[i]);
            memcpy(owned + o, g_tmpl_parts[i], l);
            o += l;
            if (i + 1 < g_tmpl_n) {
                if (g_tmpl_kind[i]) {
                    o += put_words(owned + o, c->req.seq);
                } else {
                    memcpy(owned + o, id, (size_t)idl);
                    o += (size_t)idl;
                }
            }
        }
        body = owned;
        blen = o;
    }
    size_t cap = 512 + strlen(g_path) + g_headers_len + blen;
    free(c->wbuf);
    c->wbuf = malloc(cap);
    int n;
    if (strcmp(g_method, "GET") == 0)
        n = snprintf(c->wbuf, cap, "GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n", g_path, g_hostport, g_headers);
    else
        n = snprintf(c->wbuf, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%sContent-Length: %zu\r\n\r\n",
                     g_method, g_path, g_hostport, g_headers, blen);
    memcpy(c->wbuf + n, body, blen);
    c->wlen = (size_t)n + (strcmp(g_method, "GET") == 0 ? 0 : blen);
    c->woff = 0;
    free(owned);
}

/* ---- bookkeeping ---- */
static int in_window(int64_t t) { return t >= g_measure_from && t < g_end; }

static void record(conn_t *c, int status, int64_t t_done) {
    int64_t ref = c->req.sched_ns;
    int measured = g_open_loop ? in_window(ref) : in_window(t_done);
    n_done++;
    if (!measured) return;
    n_measured++;
    if (status >= 200 && status < 300) n_ok++;
    else if (status == E_CONNECT) n_err_connect++;
    else if (status == E_READ) n_err_read++;
    else if (status == E_TIMEOUT) n_err_timeout++;
    else n_status_err++;
    if (c->hit && status >= 200 && status < 300) n_hits++;
    if (g_out) {
        int64_t lat = (t_done - ref) / 1000;
        int64_t ttfb = c->first_byte_ns ? (c->first_byte_ns - ref) / 1000 : (status > 0 ? lat : -1);
        fprintf(g_out, "%lld %lld %d %d %d\n", (long long)lat, (long long)ttfb, status, c->hit,
                status > 0 ? c->retry_after : 0);
    }
}

static void ep_add(conn_t *c) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) die("epoll_ctl");
}

static void conn_close(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        g_nopen--;
    }
    c->fd = -1;
    c->state = C_CLOSED;
    c->used = 0;
}

static void reset_parser(conn_t *c) {
    c->hlen = 0;
    c->headers_done = 0;
    c->status = 0;
    c->chunked = 0;
    c->close_after = 0;
    c->hit = 0;
    c->retry_after = 0;
    c->until_eof = 0;
    c->body_left = 0;
    c->ck_state = CK_SIZE;
    c->ck_size = 0;
    c->ck_line = 0;
    c->first_byte_ns = 0;
    c->got_bytes = 0;
}

static void try_write(conn_t *c);
static void start_connect(conn_t *c);
static void on_free(conn_t *c);
static void fail(conn_t *c, int err);

/* Attach a request to a connection and send it (connecting first when needed). */
static void send_on(conn_t *c, request_t r) {
    c->req = r;
    c->has_req = 1;
    g_in_flight++;
    build_request(c);
    reset_parser(c);
    if (c->state == C_CLOSED) {
        start_connect(c);
        return;
    }
    c->state = C_BUSY;
    c->sent_ns = now_ns();
    n_sent++;
    try_write(c);
}

static void start_connect(conn_t *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket (raise ulimit -n)");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    g_nopen++;
    n_conns_opened++;
    c->state = C_CONNECTING;
    ep_add(c);
    int rc = connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr);
    if (rc == 0) {
        c->state = C_BUSY;
        c->sent_ns = now_ns();
        n_sent++;
        try_write(c);
    } else if (errno != EINPROGRESS) {
        fail(c, E_CONNECT);
    }
}

/* The request on c ended with a transport error: record it, drop the connection. */
static void fail(conn_t *c, int err) {
    int64_t t = now_ns();
    int stale = (err == E_READ && c->used && c->got_bytes == 0 && !c->req.retried);
    int had = c->has_req;
    request_t r = c->req;
    conn_close(c);
    if (had && stale) {
        /* A keep-alive connection the server had closed: resend once on a fresh one. */
        n_retries++;
        g_in_flight--;
        c->has_req = 0;
        r.retried = 1;
        send_on(c, r);
        return;
    }
    if (had) {
        record(c, err, t);
        g_in_flight--;
        c->has_req = 0;
    }
    if (err == E_CONNECT) {
        c->state = C_BACKOFF;
        c->backoff_until = t + 10000000LL;
        return;
    }
    on_free(c);
}

static void try_write(conn_t *c) {
    while (c->woff < c->wlen) {
        ssize_t n = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (n > 0) {
            c->woff += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            return;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else {
            fail(c, E_READ);
            return;
        }
    }
}

static int header_is(const char *line, size_t len, const char *name) {
    size_t nl = strlen(name);
    return len > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':';
}

static const char *header_value(const char *line, size_t len, const char *name, size_t *vlen) {
    const char *v = line + strlen(name) + 1;
    const char *e = line + len;
    while (v < e && (*v == ' ' || *v == '\t')) v++;
    *vlen = (size_t)(e - v);
    return v;
}

static int contains_ci(const char *s, size_t n, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (strncasecmp(s + i, needle, k) == 0) return 1;
    return 0;
}

/* Parse the header block hbuf[0..end); returns 0 on success, -1 on garbage. */
static int parse_headers(conn_t *c, size_t end) {
    char *p = c->hbuf;
    char *e = c->hbuf + end;
    char *nl = memchr(p, '\n', (size_t)(e - p));
    if (!nl || (size_t)(nl - p) < 12 || strncmp(p, "HTTP/1.", 7) != 0) return -1;
    int http10 = p[7] == '0';
    c->status = atoi(p + 9);
    c->body_left = -1;
    int keepalive10 = 0;
    p = nl + 1;
    while (p < e) {
        nl = memchr(p, '\n', (size_t)(e - p));
        if (!nl) break;
        size_t len = (size_t)(nl - p);
        if (len && p[len - 1] == '\r') len--;
        size_t vl;
        const char *v;
        if (header_is(p, len, "content-length")) {
            v = header_value(p, len, "content-length", &vl);
            c->body_left = strtoll(v, NULL, 10);
        } else if (header_is(p, len, "transfer-encoding")) {
            v = header_value(p, len, "transfer-encoding", &vl);
            if (contains_ci(v, vl, "chunked")) c->chunked = 1;
        } else if (header_is(p, len, "connection")) {
            v = header_value(p, len, "connection", &vl);
            if (contains_ci(v, vl, "close")) c->close_after = 1;
            if (contains_ci(v, vl, "keep-alive")) keepalive10 = 1;
        } else if (header_is(p, len, "x-cache-hit")) {
            v = header_value(p, len, "x-cache-hit", &vl);
            if (contains_ci(v, vl, "true") || (vl && v[0] == '1')) c->hit = 1;
        } else if (header_is(p, len, "retry-after")) {
            c->retry_after = 1; /* a shed or refused answer that says when to come back */
        }
        p = nl + 1;
    }
    if (http10 && !keepalive10) c->close_after = 1;
    if (c->chunked) c->body_left = -1;
    else if (c->body_left < 0) c->until_eof = 1;
    if (c->status == 204 || c->status == 304) {
        c->body_left = 0;
        c->chunked = 0;
        c->until_eof = 0;
    }
    return 0;
}

static void complete(conn_t *c) {
    int64_t t = now_ns();
    record(c, c->status, t);
    g_in_flight--;
    c->has_req = 0;
    c->used = 1;
    if (c->close_after || c->until_eof) conn_close(c);
    else c->state = C_IDLE;
    on_free(c);
}

/* Feed body bytes; returns 1 when the response is complete. */
static int feed_body(conn_t *c, const char *b, size_t n, int64_t t) {
    if (!c->chunked) {
        if (n && !c->first_byte_ns) c->first_byte_ns = t;
        if (c->until_eof) return 0;
        c->body_left -= (int64_t)n;
        return c->body_left <= 0;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        switch (c->ck_state) {
        case CK_SIZE:
            if (ch == '\n') {
                c->ck_state = c->ck_size == 0 ? CK_TRAILER : CK_DATA;
                c->ck_line = 0;
            } else if (ch == ';') {
                c->ck_state = CK_EXT;
            } else if (ch != '\r' && ch != ' ') {
                int d = (ch >= '0' && ch <= '9') ? ch - '0' : (ch | 32) - 'a' + 10;
                c->ck_size = c->ck_size * 16 + d;
            }
            break;
        case CK_EXT:
            if (ch == '\n') {
                c->ck_state = c->ck_size == 0 ? CK_TRAILER : CK_DATA;
                c->ck_line = 0;
            }
            break;
        case CK_DATA: {
            if (!c->first_byte_ns) c->first_byte_ns = t;
            size_t take = n - i;
            if ((int64_t)take > c->ck_size) take = (size_t)c->ck_size;
            c->ck_size -= (int64_t)take;
            i += take - 1;
            if (c->ck_size == 0) c->ck_state = CK_DATA_END;
            break;
        }
        case CK_DATA_END:
            if (ch == '\n') {
                c->ck_state = CK_SIZE;
                c->ck_size = 0;
            }
            break;
        case CK_TRAILER:
            if (ch == '\n') {
                if (c->ck_line == 0) return 1;
                c->ck_line = 0;
            } else if (ch != '\r') {
                c->ck_line++;
            }
            break;
        }
    }
    return 0;
}

static void on_readable(conn_t *c) {
    static char buf[READ_BUF];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) {
            if (c->has_req && c->headers_done && c->until_eof) {
                complete(c);
                return;
            }
            if (c->has_req) fail(c, E_READ);
            else conn_close(c); /* idle keep-alive closed by the server */
            return;
        }
        int64_t t = now_ns();
        if (!c->has_req) { /* bytes nobody asked for */
            conn_close(c);
            return;
        }
        c->got_bytes += (size_t)n;
        const char *b = buf;
        size_t len = (size_t)n;
        while (!c->headers_done && len) {
            size_t room = HDR_MAX - c->hlen;
            size_t take = len < room ? len : room;
            memcpy(c->hbuf + c->hlen, b, take);
            size_t old = c->hlen;
            c->hlen += take;
            size_t scan_from = old >= 3 ? old - 3 : 0;
            char *end = memmem(c->hbuf + scan_from, c->hlen - scan_from, "\r\n\r\n", 4);
            if (!end) {
                if (c->hlen >= HDR_MAX) {
                    fail(c, E_READ);
                    return;
                }
                len = 0;
                break;
            }
            size_t hend = (size_t)(end - c->hbuf) + 4;
            if (parse_headers(c, hend) != 0) {
                fail(c, E_READ);
                return;
            }
            size_t consumed = hend - old;
            b += consumed;
            len -= consumed;
            if (c->status >= 100 && c->status < 200) { /* interim answer: wait for the real one */
                reset_parser(c);
                c->got_bytes = 1;
                continue;
            }
            c->headers_done = 1;
            if (!c->chunked && !c->until_eof && c->body_left == 0) {
                if (!c->first_byte_ns) c->first_byte_ns = t;
                complete(c);
                return;
            }
        }
        if (c->headers_done && len) {
            if (feed_body(c, b, len, t)) {
                complete(c);
                return;
            }
        }
    }
}

static void on_event(conn_t *c, uint32_t ev) {
    if (c->state == C_CONNECTING) {
        if (ev & (EPOLLERR | EPOLLHUP)) {
            fail(c, E_CONNECT);
            return;
        }
        if (ev & EPOLLOUT) {
            int err = 0;
            socklen_t l = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) {
                fail(c, E_CONNECT);
                return;
            }
            c->state = C_BUSY;
            c->sent_ns = now_ns();
            n_sent++;
            try_write(c);
            if (c->fd < 0) return;
        }
        if (!(ev & (EPOLLIN | EPOLLRDHUP))) return;
    }
    if ((ev & EPOLLOUT) && c->state == C_BUSY && c->woff < c->wlen) {
        try_write(c);
        if (c->fd < 0) return;
    }
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) on_readable(c);
}

/* ---- scheduling ---- */
static void pending_push(request_t r) {
    if (g_pend_len == g_pend_cap) {
        size_t ncap = g_pend_cap ? g_pend_cap * 2 : 1024;
        request_t *n = malloc(ncap * sizeof *n);
        for (size_t i = 0; i < g_pend_len; i++) n[i] = g_pending[(g_pend_head + i) % g_pend_cap];
        free(g_pending);
        g_pending = n;
        g_pend_cap = ncap;
        g_pend_head = 0;
    }
    g_pending[(g_pend_head + g_pend_len) % g_pend_cap] = r;
    g_pend_len++;
    if (g_pend_len > g_pend_max) g_pend_max = g_pend_len;
}

static request_t pending_pop(void) {
    request_t r = g_pending[g_pend_head];
    g_pend_head = (g_pend_head + 1) % g_pend_cap;
    g_pend_len--;
    return r;
}

/* A connection finished its request (or died): give it the next piece of work. */
static void on_free(conn_t *c) {
    if (!g_open_loop) {
        if (now_ns() >= g_end) return;
        request_t r = {.sched_ns = now_ns(), .seq = g_seq++};
        send_on(c, r);
        return;
    }
    if (g_pend_len) {
        send_on(c, pending_pop());
        return;
    }
    if (c->state == C_IDLE && !c->in_idle) {
        c->in_idle = 1;
        g_idle[g_nidle++] = (int)(c - g_conns);
    }
}

static conn_t *free_slot(void) {
    for (int i = 0; i < g_nconns; i++)
        if (g_conns[i].state == C_CLOSED && !g_conns[i].has_req) return &g_conns[i];
    return NULL;
}

static void dispatch(request_t r) {
    while (g_nidle) {
        conn_t *c = &g_conns[g_idle[--g_nidle]];
        c->in_idle = 0;
        if (c->state == C_IDLE && !c->has_req) {
            send_on(c, r);
            return;
        }
    }
    conn_t *c = free_slot();
    if (c) send_on(c, r);
    else pending_push(r);
}

static void arm_timer(int64_t at) {
    struct itimerspec its = {0};
    its.it_value.tv_sec = at / 1000000000LL;
    its.it_value.tv_nsec = at % 1000000000LL;
    timerfd_settime(g_timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void on_timer(void) {
    uint64_t expirations;
    if (read(g_timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd read");
    int64_t t = now_ns();
    double interval = 1e9 / g_rate;
    while (g_scheduling && g_next_sched <= t) {
        int64_t lag = t - g_next_sched;
        if (lag > g_max_lag_ns) g_max_lag_ns = lag;
        if (lag > 1000000) n_lag_over_1ms++;
        request_t r = {.sched_ns = g_next_sched, .seq = g_seq++};
        dispatch(r);
        g_sched_count++;
        g_next_sched = g_t0 + (int64_t)((double)g_sched_count * interval);
        if (g_next_sched >= g_end) g_scheduling = 0;
    }
    if (g_scheduling) arm_timer(g_next_sched);
}

/* Expire requests past the timeout (measured from their scheduled time) and restart backoffs. */
static void sweep(int64_t t) {
    int64_t limit = (int64_t)(g_timeout * 1e9);
    for (int i = 0; i < g_nconns; i++) {
        conn_t *c = &g_conns[i];
        if (c->has_req && t - c->req.sched_ns > limit) {
            conn_close(c);
            record(c, E_TIMEOUT, t);
            g_in_flight--;
            c->has_req = 0;
            on_free(c);
        } else if (c->state == C_BACKOFF && t >= c->backoff_until) {
            c->state = C_CLOSED;
            on_free(c);
        }
    }
    while (g_pend_len && t - g_pending[g_pend_head].sched_ns > limit) {
        conn_t tmp = {0};
        tmp.req = pending_pop();
        record(&tmp, E_TIMEOUT, t);
    }
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen --url http://127.0.0.1:PORT/path [--mode closed|open] [--connections N]\n"
            "  [--rate RPS] [--duration S] [--warmup S] [--timeout S] [--method POST|GET]\n"
            "  [--header 'K: V']... [--body FILE (with {ID} markers)] [--repeat-body FILE --repeat-pct P]\n"
            "  [--nonce STR] [--out FILE]\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *url = NULL, *body_path = NULL, *repeat_path = NULL, *out_path = NULL;
    snprintf(g_nonce, sizeof g_nonce, "%x%llx", (unsigned)getpid(), (unsigned long long)now_ns());
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--url")) url = v;
        else if (!strcmp(a, "--mode")) g_open_loop = !strcmp(v, "open");
        else if (!strcmp(a, "--connections")) g_nconns = atoi(v);
        else if (!strcmp(a, "--rate")) g_rate = atof(v);
        else if (!strcmp(a, "--duration")) g_duration = atof(v);
        else if (!strcmp(a, "--warmup")) g_warmup = atof(v);
        else if (!strcmp(a, "--timeout")) g_timeout = atof(v);
        else if (!strcmp(a, "--method")) snprintf(g_method, sizeof g_method, "%s", v);
        else if (!strcmp(a, "--body")) body_path = v;
        else if (!strcmp(a, "--repeat-body")) repeat_path = v;
        else if (!strcmp(a, "--repeat-pct")) g_repeat_pct = atoi(v);
        else if (!strcmp(a, "--nonce")) snprintf(g_nonce, sizeof g_nonce, "%s", v);
        else if (!strcmp(a, "--out")) out_path = v;
        else if (!strcmp(a, "--header")) {
            size_t l = strlen(v);
            if (g_headers_len + l + 3 >= sizeof g_headers) die("too many headers");
            memcpy(g_headers + g_headers_len, v, l);
            g_headers_len += l;
            memcpy(g_headers + g_headers_len, "\r\n", 3);
            g_headers_len += 2;
        } else usage();
        i++;
    }
    if (!url || g_nconns < 1 || g_rate <= 0 || g_duration <= 0) usage();
    parse_url(url);
    size_t blen = 0;
    split_template(body_path ? read_file(body_path, &blen) : strdup("{}"));
    if (repeat_path) g_repeat_body = read_file(repeat_path, &g_repeat_len);
    if (out_path && !(g_out = fopen(out_path, "w"))) die("cannot open --out file");

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    g_conns = calloc((size_t)g_nconns, sizeof *g_conns);
    g_idle = calloc((size_t)g_nconns, sizeof *g_idle);
    for (int i = 0; i < g_nconns; i++) {
        g_conns[i].fd = -1;
        g_conns[i].hbuf = malloc(HDR_MAX);
    }
    g_t0 = now_ns();
    g_measure_from = g_t0 + (int64_t)(g_warmup * 1e9);
    g_end = g_measure_from + (int64_t)(g_duration * 1e9);
    g_hard_end = g_end + (int64_t)((g_timeout + 1.0) * 1e9);

    if (g_open_loop) {
        g_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
        epoll_ctl(g_ep, EPOLL_CTL_ADD, g_timer_fd, &ev);
        g_next_sched = g_t0;
        arm_timer(g_next_sched);
    } else {
        for (int i = 0; i < g_nconns; i++) {
            request_t r = {.sched_ns = now_ns(), .seq = g_seq++};
            send_on(&g_conns[i], r);
        }
    }

    struct epoll_event evs[512];
    int64_t last_sweep = now_ns();
    for (;;) {
        int n = epoll_wait(g_ep, evs, 512, 10);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) on_timer();
            else on_event((conn_t *)evs[i].data.ptr, evs[i].events);
        }
        int64_t t = now_ns();
        if (t - last_sweep > 10000000LL) {
            sweep(t);
            last_sweep = t;
        }
        if (!g_open_loop && t >= g_end) break;
        if (g_open_loop && !g_scheduling && g_in_flight == 0 && g_pend_len == 0) break;
        if (t >= g_hard_end) break;
    }
    int64_t t_stop = now_ns();
    /* Closed loop: connections whose request went out before the measured window and was still
     * unanswered at its end, i.e. that got no answer at all while we measured. */
    uint64_t unfinished = 0;
    for (int i = 0; i < g_nconns; i++)
        if (g_conns[i].has_req && g_conns[i].req.sched_ns < g_measure_from) unfinished++;
    if (g_open_loop) { /* whatever is still out after the drain deadline timed out */
        for (int i = 0; i < g_nconns; i++)
            if (g_conns[i].has_req) record(&g_conns[i], E_TIMEOUT, t_stop);
        while (g_pend_len) {
            conn_t tmp = {0};
            tmp.req = pending_pop();
            record(&tmp, E_TIMEOUT, t_stop);
        }
    }
    if (g_out) fclose(g_out);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
                 ru.ru_stime.tv_usec / 1e6;
    printf("{\"mode\":\"%s\",\"rate\":%.3f,\"connections\":%d,\"duration_s\":%.3f,\"warmup_s\":%.3f,"
           "\"wall_s\":%.3f,\"sent\":%llu,\"done\":%llu,\"measured\":%llu,\"ok\":%llu,"
           "\"errors\":{\"connect\":%llu,\"read\":%llu,\"timeout\":%llu,\"status\":%llu},"
           "\"hits\":%llu,\"retries\":%llu,\"conns_opened\":%llu,\"pending_max\":%zu,"
           "\"max_schedule_lag_ms\":%.3f,\"sends_late_over_1ms\":%llu,\"driver_cpu_s\":%.3f,"
           "\"unfinished\":%llu}\n",
           g_open_loop ? "open" : "closed", g_open_loop ? g_rate : 0.0, g_nconns, g_duration, g_warmup,
           (double)(t_stop - g_t0) / 1e9, (unsigned long long)n_sent, (unsigned long long)n_done,
           (unsigned long long)n_measured, (unsigned long long)n_ok, (unsigned long long)n_err_connect,
           (unsigned long long)n_err_read, (unsigned long long)n_err_timeout, (unsigned long long)n_status_err,
           (unsigned long long)n_hits, (unsigned long long)n_retries, (unsigned long long)n_conns_opened,
           g_pend_max, (double)g_max_lag_ns / 1e6, (unsigned long long)n_lag_over_1ms, cpu,
           (unsigned long long)(g_open_loop ? 0 : unfinished));
    return 0;
}
