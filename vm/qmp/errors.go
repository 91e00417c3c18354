package qmp

import (
	"errors"
	"io"
)

// Sentinel errors. They are always returned wrapped in an error that says
// what was being done ("qmp: query-status: connection closed"); test for them
// with [errors.Is].
var (
	// ErrClosed reports a connection closed in an orderly way: by
	// [Client.Close], or by QEMU after a quit command.
	ErrClosed = errors.New("connection closed")

	// ErrBusy reports a monitor that accepted the connection but sent no
	// greeting before the deadline. QEMU serves one client per -qmp socket
	// and greets the next one only when the current one disconnects.
	ErrBusy = errors.New("monitor busy: another client is connected")
)

// Error classes QEMU sends in error replies (the QAPI enum QapiErrorClass).
const (
	ClassGenericError    = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassKVMMissingCap   = "KVMMissingCap"
)

// Error is an error reply from QEMU: {"error": {"class": ..., "desc": ...}}.
// Execute returns it wrapped with the command's name; use [errors.As] or
// [ErrorClass] to get at it.
type Error struct {
	// Class is the error class, one of the Class constants in practice.
	// It is stable and meant for programs.
	Class string `json:"class"`
	// Desc is a human-readable description. QEMU's documentation warns
	// that it is not stable: show it, do not parse it.
	Desc string `json:"desc"`
}

func (e *Error) Error() string {
	return e.Desc + " (" + e.Class + ")"
}

// ErrorClass returns the class of the QMP error reply in err's chain, or ""
// when err is not (or does not wrap) an [*Error].
func ErrorClass(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return ""
}

// lostError reports a connection that dropped while the client still
// expected to use it. It wraps io.ErrUnexpectedEOF and the read error.
type lostError struct {
	err error
}

func (e *lostError) Error() string {
	if e.err == io.EOF || e.err == io.ErrUnexpectedEOF {
		return "connection lost: " + io.ErrUnexpectedEOF.Error()
	}
	return "connection lost: " + e.err.Error()
}

func (e *lostError) Unwrap() []error {
	return []error{io.ErrUnexpectedEOF, e.err}
}

// quitError is the orderly end of a connection after a quit command.
type quitError struct{}

func (quitError) Error() string { return ErrClosed.Error() + " by QEMU after quit" }
func (quitError) Unwrap() error { return ErrClosed }
