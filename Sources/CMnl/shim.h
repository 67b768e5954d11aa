#ifndef PGCHORUS_CMNL_SHIM_H
#define PGCHORUS_CMNL_SHIM_H
#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>

/* MNL_SOCKET_BUFFER_SIZE is a macro Swift cannot import. */
static inline size_t cmnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
#endif
