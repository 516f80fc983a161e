#ifndef BORG_RELAY_CRELAYSYS_SHIM_H
#define BORG_RELAY_CRELAYSYS_SHIM_H

/* Linux calls Swift's Glibc module does not offer: GNU extensions (Glibc is built
 * without _GNU_SOURCE) and syscall(2), which is variadic. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline int relay_pidfd_open(int pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

extern int pipe2(int pipefd[2], int flags);
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);

static inline int relay_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }
/* sys/socket.h is not included here: two modules exporting it hide its constants from Swift. */
static inline int relay_accept_cloexec(int fd) {
    extern int accept4(int sockfd, void *addr, void *addrlen, int flags);
    return accept4(fd, (void *)0, (void *)0, O_CLOEXEC); /* SOCK_CLOEXEC == O_CLOEXEC on Linux */
}
static inline int relay_memfd_cloexec(const char *name) {
    extern int memfd_create(const char *name, unsigned int flags);
    return memfd_create(name, 1U); /* MFD_CLOEXEC */
}
static inline int relay_spawn_closefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}

#endif
