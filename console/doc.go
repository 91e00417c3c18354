// Package console attaches a terminal to a running VM's serial console: the
// pty QEMU made for the guest's first serial port, recorded by the vm
// package as /dev/pts/N.
//
// [Attach] puts the user's terminal in raw mode and relays bytes both ways
// with no buffering beyond one read, passes window-size changes on, and
// restores the terminal however the session ends: detaching, the guest
// powering off, QEMU dying, a panic in the relay, SIGTERM or SIGHUP. Before
// the live stream it replays the last screenful of the serial log, which
// QEMU writes in full (QEMU 7.2 drops pty output while no client has the
// pty open, and notices a new client only by polling about once a second).
//
// Escapes follow cu(1): after a newline, "~." detaches, "~~" sends one
// "~" and "~?" lists the escapes; any other character after "~" is sent
// with it. The escape character can be changed or turned off, and a
// detach key (Ctrl-] by default) detaches anywhere in a line.
//
// One interactive session per VM holds the console at a time, through a
// flock(2) on its lock file (Options.LockFile), which records
// the holder's PID; a second attach is refused with an [*InUseError] unless
// it takes over. [Watch] follows the serial log read-only and takes
// nothing.
//
// [Command] wraps Attach as a bubbletea tea.ExecCommand, for tea.Exec.
//
// The serial log is read through package seriallog, which package vm also
// uses to cap it before each start.
package console
