// The floor of a 1-Hz protocol at N processes on this machine: each process wakes on a 1-s
// timerfd, sends a 200-byte frame on each of its TCP connections (loopback), and reads what its
// neighbours send, all in one epoll loop. No TLS, no HTTP/2, no protobuf, no async runtime.
// Usage: floor N DEGREE_PAIRS PORT_BASE  (process i listens on PORT_BASE+i; connects to i+1..i+D mod N)
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int listen_on(int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
    if (bind(s, (void *)&a, sizeof a) || listen(s, 64)) { perror("listen"); exit(1); }
    return s;
}

static int dial(int port) {
    for (;;) {
        int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(0x7f000001)};
        if (connect(s, (void *)&a, sizeof a) == 0) {
            setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            return s;
        }
        close(s);
        usleep(10000);
    }
}

static void run(int i, int n, int d, int base) {
    int l = listen_on(base + i);
    int ep = epoll_create1(0);
    int fds[256], nf = 0;
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = l;
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    sleep(1); // everyone listens
    for (int k = 1; k <= d; k++) {
        int s = dial(base + (i + k) % n);
        fds[nf++] = s;
        ev.data.fd = s;
        epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
    }
    int t = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec its = {.it_interval = {1, 0}, .it_value = {0, 1 + (i * 997) % 999999999}};
    timerfd_settime(t, 0, &its, NULL);
    ev.data.fd = t;
    epoll_ctl(ep, EPOLL_CTL_ADD, t, &ev);
    char buf[4096] = {0};
    for (;;) {
        struct epoll_event evs[64];
        int m = epoll_wait(ep, evs, 64, -1);
        for (int j = 0; j < m; j++) {
            int fd = evs[j].data.fd;
            if (fd == l) {
                int s = accept(l, NULL, NULL), one = 1;
                setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                fds[nf++] = s;
                ev.data.fd = s;
                epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
            } else if (fd == t) {
                unsigned long long x;
                read(t, &x, sizeof x);
                for (int k = 0; k < nf; k++) write(fds[k], buf, 200);
            } else if (read(fd, buf, sizeof buf) <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            }
        }
    }
}

static void join(const char *ctl, int i) {
    char path[256], pid[32];
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s/floor/lab/r%d", ctl, i);
    mkdir(path, 0755);
    strcat(path, "/tasks");
    FILE *f = fopen(path, "w");
    if (!f) { perror(path); exit(1); }
    snprintf(pid, sizeof pid, "%d", getpid());
    fputs(pid, f);
    fclose(f);
}

int main(int argc, char **argv) {
    int n = atoi(argv[1]), d = atoi(argv[2]), base = atoi(argv[3]), cg = argc > 4;
    for (int i = 0; i < n; i++)
        if (fork() == 0) {
            if (cg) { join("cpu", i); join("cpuacct", i); join("memory", i); join("pids", i); }
            run(i, n, d, base);
            return 0;
        }
    pause();
}
