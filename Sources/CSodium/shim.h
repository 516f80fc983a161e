#ifndef BORG_RELAY_CSODIUM_SHIM_H
#define BORG_RELAY_CSODIUM_SHIM_H
#include <sodium.h>
#endif
