#ifndef PGCHORUS_CPCAP_SHIM_H
#define PGCHORUS_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
