#ifndef BORG_RELAY_CLIBSSH_SHIM_H
#define BORG_RELAY_CLIBSSH_SHIM_H

#include <libssh/libssh.h>
#include <libssh/callbacks.h>
#include <libssh/server.h>
#include <stdbool.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <errno.h>
#include <spawn.h>
#include <fcntl.h>

#if LIBSSH_VERSION_INT < SSH_VERSION_INT(0, 10, 0)
#error "borg-relay needs libssh 0.10 or newer (Debian 12: libssh-dev 0.10.6)"
#endif

/* ssh_options_set takes a void pointer whose type depends on the option.
 * Typed wrappers keep Swift from passing the wrong kind of pointer. */
static inline int relay_ssh_opt_string(ssh_session s, enum ssh_options_e o, const char *v) {
    return ssh_options_set(s, o, v);
}
static inline int relay_ssh_opt_int(ssh_session s, enum ssh_options_e o, int v) {
    return ssh_options_set(s, o, &v);
}
static inline int relay_ssh_opt_uint(ssh_session s, enum ssh_options_e o, unsigned int v) {
    return ssh_options_set(s, o, &v);
}
static inline int relay_ssh_opt_long(ssh_session s, enum ssh_options_e o, long v) {
    return ssh_options_set(s, o, &v);
}
static inline int relay_ssh_opt_bool(ssh_session s, enum ssh_options_e o, int v) {
    bool b = v != 0;
    return ssh_options_set(s, o, &b);
}

/* ssh_callbacks_init is a macro Swift cannot import. */
static inline void relay_channel_callbacks_init(struct ssh_channel_callbacks_struct *cb) {
    memset(cb, 0, sizeof(*cb));
    ssh_callbacks_init(cb);
}

/* A pollable handle on a child process (Linux >= 5.3); -1 with errno on failure.
 * syscall(2) is variadic, which Swift cannot call. */
static inline int relay_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* GNU extensions that Swift's Glibc module does not show (no _GNU_SOURCE there). */
extern int pipe2(int pipefd[2], int flags);
extern int accept4(int sockfd, struct sockaddr *addr, socklen_t *addrlen, int flags);
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);

static inline int relay_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
static inline int relay_accept_cloexec(int fd) { return accept4(fd, NULL, NULL, SOCK_CLOEXEC); }
static inline int relay_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

#endif
