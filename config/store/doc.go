// Package store owns vmtui's state root: the definitions of VMs on disk
// and the files of running ones.
//
// Paths says where everything lives: under $VMTUI_HOME when it is set,
// otherwise in the XDG base directories (see Paths for both layouts, and the
// *Name constants for the files of a VM's runtime and log directories).
//
// Store reads and writes the definitions (package config's VM, one TOML
// file each in vms/). It assigns each new VM an ID higher than any assigned
// before, under a lock that makes this safe across processes, and writes
// files atomically, so that a crash never leaves a half-written definition.
// A definition file is opened without blocking and read only when it is a
// regular file of sensible size.
//
// FileLock is the flock(2) the vm package takes on a VM's runtime
// directory while it starts, inspects or stops it.
package store
