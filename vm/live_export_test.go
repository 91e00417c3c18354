package vm

import "time"

// SetMemoryStall sets how long SetMemory waits for a guest that makes no
// progress, for a test; it returns the function that restores it.
func SetMemoryStall(d time.Duration) (restore func()) {
	old := memoryStall
	memoryStall = d
	return func() { memoryStall = old }
}

// SetStopLockWait sets how long Stop waits for the VM's lock, for a test
// that is not parallel; it returns the function that restores it.
func SetStopLockWait(d time.Duration) (restore func()) {
	old := stopLockWait
	stopLockWait = d
	return func() { stopLockWait = old }
}
