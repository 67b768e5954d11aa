#ifndef PGCHORUS_CLIBPQ_SHIM_H
#define PGCHORUS_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
