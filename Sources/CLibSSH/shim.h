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

#endif
