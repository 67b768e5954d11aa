#ifndef PGCHORUS_CMNL_SHIM_H
#define PGCHORUS_CMNL_SHIM_H
#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>
#include <linux/if_addr.h>
#include <linux/netlink.h>
#include <sys/socket.h>
#include <net/if.h>
#include <errno.h>
#include <string.h>

/* Macros and inline helpers Swift cannot import. */
static inline size_t cmnl_socket_buffer_size(void) { return MNL_SOCKET_BUFFER_SIZE; }
static inline unsigned int cmnl_socket_autopid(void) { return MNL_SOCKET_AUTOPID; }
static inline int cmnl_errno(void) { return errno; }

/* One address of a netlink RTM_NEWADDR/RTM_DELADDR message, flattened for Swift. */
struct cmnl_address {
    int family;
    int prefix_length;
    int index;
    unsigned char address[16];
    int has_address;
    unsigned char protocol;
    char label[IFNAMSIZ];
    int type; /* RTM_NEWADDR or RTM_DELADDR */
};

static int cmnl_address_attribute(const struct nlattr *attr, void *data) {
    struct cmnl_address *out = data;
    int type = mnl_attr_get_type(attr);
    if (type == IFA_LOCAL || (type == IFA_ADDRESS && !out->has_address)) {
        size_t len = mnl_attr_get_payload_len(attr);
        if (len == 4 || len == 16) {
            memcpy(out->address, mnl_attr_get_payload(attr), len);
            out->has_address = 1;
        }
    } else if (type == IFA_PROTO) {
        out->protocol = mnl_attr_get_u8(attr);
    } else if (type == IFA_LABEL) {
        strncpy(out->label, mnl_attr_get_str(attr), IFNAMSIZ - 1);
    }
    return MNL_CB_OK;
}

/* Parses one address message; returns 0 when it is not one. */
static inline int cmnl_parse_address(const struct nlmsghdr *nlh, struct cmnl_address *out) {
    if (nlh->nlmsg_type != RTM_NEWADDR && nlh->nlmsg_type != RTM_DELADDR) return 0;
    const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
    memset(out, 0, sizeof(*out));
    out->family = ifa->ifa_family;
    out->prefix_length = ifa->ifa_prefixlen;
    out->index = (int)ifa->ifa_index;
    out->type = nlh->nlmsg_type;
    mnl_attr_parse(nlh, sizeof(*ifa), cmnl_address_attribute, out);
    return 1;
}
#endif
